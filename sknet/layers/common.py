"""What the layers, the fast path and the task modules share: the kinds of convolution and
BatchNorm of each number of spatial dimensions (one table each), and folding a BN into its conv."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
"""The convolution module of each number of spatial dimensions."""
BATCH_NORMS: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
"""The BatchNorm module of each number of spatial dimensions: each normalises over this
process's batch."""
CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
"""The convolution function of each number of spatial dimensions."""

CONV_TYPES: tuple[type[nn.Module], ...] = tuple(CONVS.values())
"""Every convolution kind, for ``isinstance``."""
LOCAL_BATCH_NORM_TYPES: tuple[type[nn.Module], ...] = tuple(BATCH_NORMS.values())
"""BatchNorms over this process's batch (the fast path calls their kernel itself)."""
BATCH_NORM_TYPES: tuple[type[nn.Module], ...] = (*LOCAL_BATCH_NORM_TYPES, nn.SyncBatchNorm)
"""Every BatchNorm kind, ``SyncBatchNorm`` (statistics over all processes) included."""


def spatial_dims(dims: int) -> tuple[int, ...]:
    """The axes of the spatial dimensions of an ``[N, C, *spatial]`` tensor: ``(-2, -1)`` in 2D."""
    return tuple(range(-dims, 0))


def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` per channel of an eval-mode BatchNorm: ``BN(y) = scale * y + shift``."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def fold_bn(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    ``BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta`` is a per-channel affine map, so it
    scales each output filter and adds a bias. The result stays differentiable in the parameters.
    """
    scale, bias = bn_affine(bn)
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.reshape(-1, *[1] * (conv.weight.dim() - 1)), bias


def first_conv(model: nn.Module) -> nn.Module:
    """The model's first convolution (the one that reads the input)."""
    first = next((m for m in model.modules() if isinstance(m, CONV_TYPES)), None)
    if first is None:
        raise ValueError(
            f"{type(model).__name__} has no convolution to read its input channels from"
        )
    return first


def input_channels(model: nn.Module) -> int:
    """Channels the model takes: those of its first convolution."""
    return first_conv(model).in_channels
