"""Reusable layers: nothing here imports from :mod:`sknet.models`."""

from torch import nn

from sknet.layers.common import fold_bn
from sknet.layers.conv_bn import ConvBnAct
from sknet.layers.frozen_norm import FrozenBatchNorm, freeze_norm
from sknet.layers.init import init_weights
from sknet.layers.lsk import LSK_DECOMPOSITION, LSKAttention, LSKUnit
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

SELECTION_UNITS: tuple[type[nn.Module], ...] = (SKConv, LSKUnit)
"""Every kind of selection unit (its ``attention`` submodule outputs the selection weights):
what ``Backbone.sk_units`` lists."""

__all__ = [
    "DEFAULT_BRANCHES",
    "LSK_DECOMPOSITION",
    "SELECTION_UNITS",
    "ConvBnAct",
    "FrozenBatchNorm",
    "LSKAttention",
    "LSKUnit",
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
