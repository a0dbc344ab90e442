"""Reusable layers: nothing here imports from :mod:`sknet.models`."""

from torch import nn

from sknet.layers.common import fold_bn
from sknet.layers.conv_bn import ConvBnAct
from sknet.layers.frozen_norm import (
    FrozenBatchNorm,
    batch_norm_types,
    freeze_norm,
    frozen_norm_types,
)
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
"""The selection units, what ``Backbone.sk_units`` lists: modules that weigh several candidate
feature maps by an attention whose output (a hookable ``attention`` submodule) is the weights:
``[N, M, C]`` (SK), ``[N, radix, C]`` (split attention), ``[N, M, H, W]`` (LSK, spatial)."""

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
    "SplitAttention",
    "SplitAttentionConv",
    "SqueezeExcite",
    "batch_norm_types",
    "fold_bn",
    "freeze_norm",
    "frozen_norm_types",
    "fuse_dim",
    "init_weights",
    "parse_branches",
    "split_attention_width",
]
