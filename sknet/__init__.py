"""sknet: Selective Kernel Networks (Li, Wang, Hu, Yang; CVPR 2019) in PyTorch.

``import sknet`` loads the layers, the models and their tools. The task functions
``sknet.train``, ``sknet.evaluate`` and ``sknet.analyze`` are loaded on first use (from
:mod:`sknet.training`, :mod:`sknet.evaluation` and :mod:`sknet.analysis`), so that a program
that evaluates, exports or analyses weights never imports the training loop (the ``sknet``
command line builds every subcommand's parser, the training flags included, and so loads it).
"""

import importlib
from typing import Any

from sknet.convert import Replacement, convert_to_sk
from sknet.export import deploy, export_onnx
from sknet.layers import SKAttention, SKConv, SKConv1d, SKConv3d, freeze_norm
from sknet.models import (
    create_model,
    from_pretrained,
    from_timm,
    list_models,
    load_pretrained,
    save_pretrained,
    to_timm,
)
from sknet.models.complexity import profile_model
from sknet.profiling import profile

__version__ = "0.1.0"

TASKS = {"train": "sknet.training", "evaluate": "sknet.evaluation", "analyze": "sknet.analysis"}
"""The task functions that ``sknet.NAME`` loads on first use, and their modules."""


def __getattr__(name: str) -> Any:
    if name in TASKS:
        return getattr(importlib.import_module(TASKS[name]), name)
    raise AttributeError(f"module 'sknet' has no attribute {name!r}")


__all__ = [
    "Replacement",
    "SKAttention",
    "SKConv",
    "SKConv1d",
    "SKConv3d",
    "__version__",
    "analyze",
    "convert_to_sk",
    "create_model",
    "deploy",
    "evaluate",
    "export_onnx",
    "freeze_norm",
    "from_pretrained",
    "from_timm",
    "list_models",
    "load_pretrained",
    "profile",
    "profile_model",
    "save_pretrained",
    "to_timm",
    "train",
]
