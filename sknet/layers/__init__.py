"""Reusable layers: nothing here imports from :mod:`sknet.models`."""

from sknet.layers.common import fold_bn
from sknet.layers.conv_bn import ConvBnAct
from sknet.layers.frozen_norm import FrozenBatchNorm, freeze_norm
from sknet.layers.init import init_weights
from sknet.layers.se import SqueezeExcite
from sknet.layers.sk_conv import (
    DEFAULT_BRANCHES,
    SKAttention,
    SKConv,
    SKConv1d,
    SKConv3d,
    fuse_dim,
    parse_branches,
)

__all__ = [
    "DEFAULT_BRANCHES",
    "ConvBnAct",
    "FrozenBatchNorm",
    "SKAttention",
    "SKConv",
    "SKConv1d",
    "SKConv3d",
    "SqueezeExcite",
    "fold_bn",
    "freeze_norm",
    "fuse_dim",
    "init_weights",
    "parse_branches",
]
