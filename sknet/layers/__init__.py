"""Reusable layers: nothing here imports from :mod:`sknet.models`."""

from torch import nn

from sknet.layers.common import fold_bn
from sknet.layers.conv_bn import ConvBnAct
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
from sknet.layers.split_attention import (
    SplitAttention,
    SplitAttentionConv,
    split_attention_width,
)

SELECTION_UNITS: tuple[type[nn.Module], ...] = (SKConv, SplitAttentionConv, LSKUnit)
"""Every kind of selection unit, what ``Backbone.sk_units`` lists: modules that weigh several
candidate feature maps by an attention whose output (a hookable ``attention`` submodule) is the
weights, ``[N, choices, C]`` (SK, split attention) or ``[N, choices, H, W]`` (LSK)."""

__all__ = [
    "DEFAULT_BRANCHES",
    "LSK_DECOMPOSITION",
    "SELECTION_UNITS",
    "ConvBnAct",
    "LSKAttention",
    "LSKUnit",
    "SKAttention",
    "SKConv",
    "SKConv1d",
    "SKConv3d",
    "SplitAttention",
    "SplitAttentionConv",
    "SqueezeExcite",
    "fold_bn",
    "fuse_dim",
    "init_weights",
    "parse_branches",
    "split_attention_width",
]
