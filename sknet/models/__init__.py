"""Networks built from :mod:`sknet.layers`; importing this registers every model."""

from sknet.models import zoo_digits, zoo_imagenet  # noqa: F401  (register the models)
from sknet.models.base import Backbone, FeatureExtractor
from sknet.models.pretrained import load_pretrained, read_config, save_pretrained
from sknet.models.registry import (
    Derivation,
    ModelEntry,
    Paper,
    PaperRow,
    create_model,
    get_entry,
    list_models,
    paper_rows,
    register_model,
    register_paper_row,
)
from sknet.models.resnext import Bottleneck, ResNeXt

__all__ = [
    "Backbone",
    "Bottleneck",
    "Derivation",
    "FeatureExtractor",
    "ModelEntry",
    "Paper",
    "PaperRow",
    "ResNeXt",
    "create_model",
    "get_entry",
    "list_models",
    "load_pretrained",
    "paper_rows",
    "read_config",
    "register_model",
    "register_paper_row",
    "save_pretrained",
]
