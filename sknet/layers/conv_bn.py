"""Convolution + BatchNorm (+ ReLU): the unit every network in the paper is made of."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

SLOW_DILATED_WEIGHT_GRAD_CHANNELS = (1, 8)
"""Input channels per group for which PyTorch's CPU backend (oneDNN) computes the weight gradient
of a dilated convolution 1.6-6x slower than that of the same convolution undilated: on the
project's 2-core Xeon, every shape measured (batch 8 and 32, 7-56 pixels, 128-1024 channels) with
1 or 8 channels per group, and none with 2, 4, 16, 32 or 64 (benchmarks/RESULTS.md)."""


def _phases(t: torch.Tensor, dilation: tuple[int, int]) -> torch.Tensor:
    """The ``dh * dw`` polyphase components ``t[..., i::dh, j::dw]`` stacked along the batch.

    ``t`` is zero-padded at the end to a multiple of the dilation first, so that the components
    share one size. A convolution with dilation ``d`` and stride 1 is, on each component, the
    same convolution undilated: its output's component ``(i, j)`` reads only the input's.
    """
    dh, dw = dilation
    pad_h, pad_w = -t.shape[-2] % dh, -t.shape[-1] % dw
    if pad_h or pad_w:
        t = F.pad(t, (0, pad_w, 0, pad_h))
    batch, channels, height, width = t.shape
    split = t.reshape(batch, channels, height // dh, dh, width // dw, dw)
    return split.permute(3, 5, 0, 1, 2, 4).reshape(-1, channels, height // dh, width // dw)


class PhaseGradConv2d(torch.autograd.Function):
    """A bias-free, stride-1, "same"-padded dilated convolution whose weight gradient runs
    undilated on the polyphase components of the input and the output gradient (:func:`_phases`).

    Forward and input gradient are the usual dilated ones. The weight gradient is the same sum of
    products over the same pixel pairs, regrouped, at the cost of copying both tensors once; it
    pays where the backend has no fast dilated kernel (:data:`SLOW_DILATED_WEIGHT_GRAD_CHANNELS`).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, dilation: tuple[int, int],
        groups: int
    ) -> torch.Tensor:
        padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, weight.shape[-2:], strict=True))
        ctx.dilation, ctx.padding, ctx.groups = dilation, padding, groups
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved_x, saved_weight = ctx.saved_tensors
        # Under autocast the forward ran in the output's (the gradient's) dtype.
        x, weight = saved_x.to(grad.dtype), saved_weight.to(grad.dtype)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], ctx.padding, ctx.dilation, False, [0, 0],
                ctx.groups, [True, False, False]
            )[0].to(saved_x.dtype)
        if ctx.needs_input_grad[1]:
            undilated_padding = [(k - 1) // 2 for k in weight.shape[-2:]]
            grad_weight = torch.ops.aten.convolution_backward(
                _phases(grad, ctx.dilation), _phases(x, ctx.dilation), weight, None, [1, 1],
                undilated_padding, [1, 1], False, [0, 0], ctx.groups, [False, True, False]
            )[1].to(saved_weight.dtype)
        return grad_x, grad_weight, None, None


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
        SKNet-50's first one, batch 8). A stride-1 dilated convolution trained on the CPU with
        channels per group for which oneDNN's dilated weight gradient is slow takes that
        gradient from the undilated convolution of the polyphase components
        (:class:`PhaseGradConv2d`).
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
                # One copy, which the convolution also keeps for its backward (a strided view
                # would be copied by the forward and again by the backward).
                layout = (
                    torch.channels_last
                    if x.dim() == 4 and not x.is_contiguous()
                    and x.is_contiguous(memory_format=torch.channels_last)
                    else torch.contiguous_format
                )
                x = x[..., :: step[0], :: step[1]].contiguous(memory_format=layout)
                stride = tuple(s // p for s, p in zip(stride, step, strict=True))
                dilation = tuple(d if p == 1 else 1 for d, p in zip(dilation, step, strict=True))
                padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
        if (
            dilation != (1, 1)
            and stride == (1, 1)
            and padding == same_padding
            and bias is None
            and on_cpu
            and weight.requires_grad
            and torch.is_grad_enabled()
            and weight.shape[1] in SLOW_DILATED_WEIGHT_GRAD_CHANNELS
        ):
            return PhaseGradConv2d.apply(x, weight, dilation, conv.groups)
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
