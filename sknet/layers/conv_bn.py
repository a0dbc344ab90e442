"""Convolution + BatchNorm (+ ReLU): the unit every network in the paper is made of, in 1, 2 or 3
spatial dimensions."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from sknet.layers.cpu_conv import RoutedConv2d, subsample, weight_grad_route

CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCH_NORMS: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
"""Convolution and BatchNorm of each number of spatial dimensions."""


def spatial_dims(dims: int) -> tuple[int, ...]:
    """The axes of the spatial dimensions of an ``[N, C, *spatial]`` tensor: ``(-2, -1)`` in 2D."""
    return tuple(range(-dims, 0))


def fold_bn(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    ``BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta`` is a per-channel affine map, so it
    scales each output filter and adds a bias. The result stays differentiable in the parameters.
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.reshape(-1, *[1] * (conv.weight.dim() - 1)), bias


class ConvBnAct(nn.Sequential):
    """``Conv(bias=False) -> BatchNorm -> ReLU`` with "same" padding for odd kernels, in ``dims``
    spatial dimensions (``Conv2d`` and ``BatchNorm2d`` for images).

    Submodules are named ``conv``, ``bn`` and (when ``act``) ``act`` so that BN folding and weight
    import can address them; the convolution runs as ``F.conv2d`` (``conv1d``, ``conv3d``) with
    ``conv``'s parameters (:meth:`convolve`). With the BatchNorm in eval mode, the forward folds it
    into the convolution on the fly (one convolution with a bias instead of a convolution and a BN
    pass) whenever that is cheaper: when a filter has no more weights than it has outputs.
    :func:`sknet.deploy` folds it once for good (``bn`` becomes ``nn.Identity``).

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

    def folds_bn(self, x: torch.Tensor) -> bool:
        """Whether the forward on ``x`` folds an eval-mode BN into the convolution."""
        bn = self.bn
        if not isinstance(bn, BATCH_NORMS[self.dims]) or bn.training or bn.running_var is None:
            return False
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            # The choice below depends on the batch size, which an exported graph keeps dynamic;
            # an exported eval-mode graph keeps its BN (sknet.deploy folds it for good).
            return False
        conv = self.conv
        # Folding touches every weight once; the BN pass it saves touches every output once.
        outputs_per_filter = x.shape[0]
        for side, step in zip(x.shape[2:], conv.stride, strict=True):
            outputs_per_filter *= side // step
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
        weight gradient takes a faster route (:mod:`sknet.layers.cpu_conv`). Those measured
        shortcuts are for images; 1D and 3D convolutions run as they are.
        """
        conv = self.conv
        weight = conv.weight if weight is None else weight
        bias = conv.bias if bias is None else bias
        stride, padding, dilation = conv.stride, conv.padding, conv.dilation
        kernel = conv.kernel_size
        same_padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
        on_cpu = x.device.type == "cpu"
        if padding == same_padding and self.dims == 2:
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
        return CONV_FUNCTIONS[self.dims](x, weight, bias, stride, padding, dilation, conv.groups)

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
