"""Convolution + BatchNorm (+ ReLU): the unit every network in the paper is made of, in 1, 2 or 3
spatial dimensions."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from sknet.layers import fast
from sknet.layers.common import BATCH_NORMS, CONVS


class ConvBnAct(nn.Sequential):
    """``Conv(bias=False) -> BatchNorm -> ReLU`` with "same" padding for odd kernels, in ``dims``
    spatial dimensions (``Conv2d`` and ``BatchNorm2d`` for images).

    Submodules are named ``conv``, ``bn`` and (when ``act``) ``act`` so that BN folding and weight
    import can address them. The forward is those three in turn, unless the fast path
    (:mod:`sknet.layers.fast`) is active: it computes the same with subsampled strided and dilated
    convolutions, faster CPU weight-gradient routes and, on the CPU, an eval-mode BN (or frozen
    norm) folded on the fly.
    :func:`sknet.deploy` folds the BN once for good (``bn`` becomes ``nn.Identity``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (odd).
        stride: convolution stride.
        dilation: kernel dilation; padding keeps the spatial size at stride 1.
        groups: convolution groups (``in_channels`` for depthwise).
        act: append a ReLU.
        dims: spatial dimensions: 1 (signals ``[N, C, L]``), 2 (images), 3 (volumes).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
        dims: int = 2,
    ) -> None:
        if dims not in CONVS:
            raise ValueError(f"ConvBnAct: dims must be 1, 2 or 3, got {dims}")
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvBnAct: kernel_size must be odd, got {kernel_size}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"ConvBnAct: groups={groups} must divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict({
            "conv": CONVS[dims](
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=dilation * (kernel_size - 1) // 2,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            "bn": BATCH_NORMS[dims](out_channels),
        })
        if act:
            layers["act"] = nn.ReLU(inplace=True)
        super().__init__(layers)
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast.conv_bn_act(self, x) if fast.active(x) else super().forward(x)
