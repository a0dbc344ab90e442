"""Convolution + BatchNorm (+ ReLU): the unit every network in the paper is made of."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class ConvBnAct(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` with "same" padding for odd kernels.

    Submodules are named ``conv``, ``bn`` and (when ``act``) ``act`` so that BN folding and weight
    import can address them.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (odd).
        stride: convolution stride.
        dilation: kernel dilation; padding keeps the spatial size at stride 1.
        groups: convolution groups (``in_channels`` for depthwise).
        act: append a ReLU.
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
    ) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvBnAct: kernel_size must be odd, got {kernel_size}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"ConvBnAct: groups={groups} must divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict({
            "conv": nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=dilation * (kernel_size - 1) // 2,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            "bn": nn.BatchNorm2d(out_channels),
        })
        if act:
            layers["act"] = nn.ReLU(inplace=True)
        super().__init__(layers)
