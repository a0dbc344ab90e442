"""Networks built from :mod:`sknet.layers`; importing this registers every model."""

# Importing a zoo registers its models; the order is the order of `sknet profile`'s rows.
from sknet.models import zoo_imagenet  # noqa: F401  (Tables 1-3, 6, 7)

# isort: split
from sknet.models import zoo_lightweight  # noqa: F401  (Table 4)

# isort: split
from sknet.models import zoo_cifar  # noqa: F401  (Table 5)

# isort: split
from sknet.models import zoo_digits  # noqa: F401  (the README's main job)

# isort: split
from sknet.models import zoo_lsknet  # noqa: F401  (LSKNet's ImageNet backbones)

# isort: split
from sknet.models import zoo_resnest  # noqa: F401  (ResNeSt, timm's variants)
from sknet.models.base import Backbone, FeatureExtractor, FeatureInfo
from sknet.models.factory import create_model, from_pretrained, from_timm, load_pretrained
from sknet.models.lsknet import LSKNet
from sknet.models.registry import (
    Derivation,
    ModelEntry,
    Paper,
    PaperRow,
    get_entry,
    list_models,
    paper_rows,
    register_model,
    register_paper_row,
)
from sknet.models.release import model_card, save_pretrained
from sknet.models.resnext import Bottleneck, ResNeXt
from sknet.models.shufflenet import ShuffleNetV2, ShuffleUnit
from sknet.models.timm_weights import TIMM_ARCHITECTURES, to_timm
from sknet.models.weights_io import read_record

__all__ = [
    "TIMM_ARCHITECTURES",
    "Backbone",
    "Bottleneck",
    "Derivation",
    "FeatureExtractor",
    "FeatureInfo",
    "LSKNet",
    "ModelEntry",
    "Paper",
    "PaperRow",
    "ResNeXt",
    "ShuffleNetV2",
    "ShuffleUnit",
    "create_model",
    "from_pretrained",
    "from_timm",
    "get_entry",
    "list_models",
    "load_pretrained",
    "model_card",
    "paper_rows",
    "read_record",
    "register_model",
    "register_paper_row",
    "save_pretrained",
    "to_timm",
]
