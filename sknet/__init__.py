"""sknet: Selective Kernel Networks (Li, Wang, Hu, Yang; CVPR 2019) in PyTorch."""

from sknet.export import deploy
from sknet.layers import SKAttention, SKConv
from sknet.models import create_model, list_models
from sknet.profile import profile, profile_model

__version__ = "0.1.0"

__all__ = [
    "SKAttention",
    "SKConv",
    "__version__",
    "create_model",
    "deploy",
    "list_models",
    "profile",
    "profile_model",
]
