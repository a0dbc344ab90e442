"""What the layers, the fast path and the task modules share: the kinds of convolution and
BatchNorm of each number of spatial dimensions (one table each), and folding a BN into its conv."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sknet.errors import UserError

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


def require_running_statistics(norm: nn.Module, who: str, where: str, why: str) -> None:
    """Refuse, in one line naming ``who`` refuses and ``why``, a BatchNorm ``where`` that keeps no
    running statistics (``track_running_stats=False``): it normalises by the batch even in eval
    mode, so it can be neither frozen nor folded into its convolution."""
    if norm.running_var is None:
        raise UserError(
            f"{who}: BatchNorm {where!r} keeps no running statistics (track_running_stats=False), "
            f"so {why}"
        )


def uses_batch_statistics(norm: nn.Module) -> bool:
    """Whether ``norm`` normalises by the statistics of the batch it is given, and so needs more
    than one value per channel: a BatchNorm in training mode (or one without running
    statistics). A frozen norm (:func:`~sknet.layers.freeze_norm`) never does."""
    return isinstance(norm, _BatchNorm) and (norm.training or norm.running_var is None)


def check_batch(norm: nn.Module, batch: object, owner: str, what: str) -> None:
    """Refuse a training batch of one where ``norm`` normalises one value per channel (a pooled
    ``[N, C, 1, 1]`` input) by the batch's statistics: the output would be its bias alone.

    Args:
        norm: the normalisation of the pooled features.
        batch: the batch size; only a concrete one is checked (a traced one, under ``torch.fx``,
            is a symbol, not a number).
        owner: the unit, for the message (e.g. ``"SKConv"``).
        what: the normalisation, for the message (e.g. ``"the fuse BatchNorm (Eq. 3)"``).
    """
    if uses_batch_statistics(norm) and isinstance(batch, int) and batch == 1:
        raise ValueError(
            f"{owner} in training mode needs a batch of at least 2: {what} normalises one value "
            "per channel over the batch; use a larger batch, drop the last incomplete batch, "
            "freeze the BatchNorms (sknet.freeze_norm(model)) or call model.eval()"
        )


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
