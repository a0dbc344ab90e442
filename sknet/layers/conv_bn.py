"""Convolution + BatchNorm (+ ReLU): the unit every network in the paper is made of."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from sknet.layers.cpu_conv import RoutedConv2d, subsample, weight_grad_route


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    ``BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta`` is a per-channel affine map, so it
    scales each output filter and adds a bias. The result stays differentiable in the parameters.
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.reshape(-1, 1, 1, 1), bias


class ConvBnAct(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` with "same" padding for odd kernels.

    Submodules are named ``conv``, ``bn`` and (when ``act``) ``act`` so that BN folding and weight
    import can address them; the convolution runs as ``F.conv2d`` with ``conv``'s parameters
    (:meth:`convolve`). With the BatchNorm in eval mode, the forward folds it into the
    convolution on the fly (one convolution with a bias instead of a convolution and a BN pass)
    whenever that is cheaper: when a filter has no more weights than it has outputs.
    :func:`sknet.deploy` folds it once for good (``bn`` becomes ``nn.Identity``).

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

    def folds_bn(self, x: torch.Tensor) -> bool:
        """Whether the forward on ``x`` folds an eval-mode BN into the convolution."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d) or bn.training or bn.running_var is None:
            return False
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            # The choice below depends on the batch size, which an exported graph keeps dynamic;
            # an exported eval-mode graph keeps its BN (sknet.deploy folds it for good).
            return False
        conv = self.conv
        # Folding touches every weight once; the BN pass it saves touches every output once.
        outputs_per_filter = x.shape[0] * (x.shape[-2] // conv.stride[0]) * (
            x.shape[-1] // conv.stride[1]
        )
        return conv.weight[0].numel() <= outputs_per_filter

    def convolve(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The convolution alone, with ``conv``'s own weight and bias unless others are given.

        A convolution that only ever reads every ``step``-th pixel runs as a convolution of the
        subsampled view: the same products and sums without the kernels that oneDNN runs far
        slower. That is a dilated convolution whose stride is a multiple of its dilation (the
        stride-2 "5x5" SK branch, 3x3 with dilation 2, becomes an undilated 3x3), and on the CPU
        a strided 1x1 convolution (the projection shortcut, whose oneDNN weight gradient
        otherwise copies the whole input into another layout: 56 ms against 25 ms for
        SKNet-50's first one, batch 8). Trained on the CPU with few channels per group, the
        weight gradient takes a faster route (:mod:`sknet.layers.cpu_conv`).
        """
        conv = self.conv
        weight = conv.weight if weight is None else weight
        bias = conv.bias if bias is None else bias
        stride, padding, dilation = conv.stride, conv.padding, conv.dilation
        kernel = conv.kernel_size
        same_padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
        on_cpu = x.device.type == "cpu"
        if padding == same_padding:
            step = tuple(
                s if k == 1 and on_cpu else d if k > 1 and s % d == 0 else 1
                for s, d, k in zip(stride, dilation, kernel, strict=True)
            )
            if step != (1, 1):
                x = subsample(x, step)
                stride = tuple(s // p for s, p in zip(stride, step, strict=True))
                dilation = tuple(d if p == 1 else 1 for d, p in zip(dilation, step, strict=True))
                padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
        route = weight_grad_route(x, weight, stride, padding, dilation)
        if route is not None and bias is None:
            return RoutedConv2d.apply(x, weight, stride, padding, dilation, conv.groups, route)
        return F.conv2d(x, weight, bias, stride, padding, dilation, conv.groups)

    def bn_act(self, conv_out: torch.Tensor) -> torch.Tensor:
        """What follows the convolution: BN, then the ReLU if any."""
        return self._activate(self.bn(conv_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folds_bn(x):
            return self._activate(self.convolve(x, *fold_bn(self.conv, self.bn)))
        return self.bn_act(self.convolve(x))

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        act = self._modules.get("act")
        return x if act is None else act(x)
