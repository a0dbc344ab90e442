"""sknet: Selective Kernel Networks (Li, Wang, Hu, Yang; CVPR 2019) in PyTorch."""

from sknet.convert import Replacement, convert_to_sk
from sknet.export import deploy, export_onnx
from sknet.layers import SKAttention, SKConv
from sknet.models import (
    create_model,
    from_pretrained,
    from_timm,
    list_models,
    load_pretrained,
    save_pretrained,
    to_timm,
)
from sknet.profile import profile, profile_model

__version__ = "0.1.0"

__all__ = [
    "Replacement",
    "SKAttention",
    "SKConv",
    "__version__",
    "convert_to_sk",
    "create_model",
    "deploy",
    "export_onnx",
    "from_pretrained",
    "from_timm",
    "list_models",
    "load_pretrained",
    "profile",
    "profile_model",
    "save_pretrained",
    "to_timm",
]
