"""Convolutions trained on the CPU whose weight gradient takes a faster route than oneDNN's.

PyTorch's CPU convolutions run on oneDNN, whose weight gradient for grouped convolutions with
few channels per group in NCHW has no fast kernel. A route is a choice of algorithm, not of
arithmetic: the same products, summed over the same pixel pairs. Measured on the project's
2-core Xeon, batch 8, ms per weight gradient of a 3x3 convolution with 128 channels at 56x56
(``python benchmarks/weight_grad_routes.py``; all sizes in benchmarks/RESULTS.md):

=====================  ===========  ===========  ======
channels per group     oneDNN NCHW  NHWC copies  phases
=====================  ===========  ===========  ======
2 or 4                 15.6-17.9    8.6-12.9     27-31
8, dilated             16.3         8.2          6.6
1, dilated             18.0         12.1         4.4
1 or 8, undilated; 16  2.0-4.1      4.1-7.5      (6.9)
=====================  ===========  ===========  ======

The routes include copying the input and the gradient. At 28x28 and 14x14 the ranking is the
same, except that 8 channels per group, dilated, is a near tie between the two routes there (at
14x14: NHWC 1.40 ms, phases 1.71 ms, oneDNN 2.82 ms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

Pair = tuple[int, int]

NHWC_WEIGHT_GRAD_CHANNELS = (2, 4)
"""Channels per group whose NCHW weight gradient runs faster on NHWC copies (any dilation)."""

PHASE_WEIGHT_GRAD_CHANNELS = (1, 8)
"""Channels per group whose dilated, stride-1 weight gradient runs faster undilated on the
polyphase components (:func:`phases`)."""


def weight_grad_route(
    x: torch.Tensor, weight: torch.Tensor, stride: Pair, padding: Pair, dilation: Pair
) -> str | None:
    """``"nhwc"``, ``"phases"`` or ``None`` (oneDNN's own) for training this grouped convolution."""
    if x.device.type != "cpu" or not (weight.requires_grad and torch.is_grad_enabled()):
        return None
    if x.dim() != 4 or not x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return None  # already NHWC (or ambiguous: one pixel or one channel), where oneDNN is fast
    per_group = weight.shape[1]
    if per_group == x.shape[1]:
        return None  # not grouped: the measurements behind the routes are of grouped ones
    if per_group in NHWC_WEIGHT_GRAD_CHANNELS:
        return "nhwc"
    same = tuple(d * (k - 1) // 2 for d, k in zip(dilation, weight.shape[-2:], strict=True))
    if (
        per_group in PHASE_WEIGHT_GRAD_CHANNELS
        and dilation != (1, 1)
        and stride == (1, 1)
        and padding == same
    ):
        return "phases"
    return None


def phases(t: torch.Tensor, dilation: Pair) -> torch.Tensor:
    """The ``dh * dw`` polyphase components ``t[..., i::dh, j::dw]`` stacked along the batch.

    ``t`` is zero-padded at the end to a multiple of the dilation first, so that the components
    share one size. A "same"-padded convolution with dilation ``d`` and stride 1 is, on each
    component, the same convolution undilated: its output's component ``(i, j)`` reads only the
    input's.
    """
    dh, dw = dilation
    pad_h, pad_w = -t.shape[-2] % dh, -t.shape[-1] % dw
    if pad_h or pad_w:
        t = F.pad(t, (0, pad_w, 0, pad_h))
    batch, channels, height, width = t.shape
    split = t.reshape(batch, channels, height // dh, dh, width // dw, dw)
    return split.permute(3, 5, 0, 1, 2, 4).reshape(-1, channels, height // dh, width // dw)


class RoutedConv2d(torch.autograd.Function):
    """``F.conv2d`` without bias whose weight gradient takes ``route`` (:func:`weight_grad_route`).

    Forward and input gradient are oneDNN's. ``"nhwc"`` computes the weight gradient from
    channels-last copies of the input and the output gradient; ``"phases"`` from the undilated
    convolution of their polyphase components (stride 1, "same" padding).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, stride: Pair, padding: Pair,
        dilation: Pair, groups: int, route: str
    ) -> torch.Tensor:
        ctx.spec = (stride, padding, dilation, groups)
        ctx.route = route
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved_x, saved_weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.spec
        # Under autocast the forward ran in the output's (the gradient's) dtype.
        x, weight = saved_x.to(grad.dtype), saved_weight.to(grad.dtype)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv_grad(grad, x, weight, ctx.spec, 0).to(saved_x.dtype)
        if ctx.needs_input_grad[1]:
            if ctx.route == "phases":
                x, grad = phases(x, dilation), phases(grad, dilation)
                padding = tuple((k - 1) // 2 for k in weight.shape[-2:])
                dilation = (1, 1)
            else:
                layout = torch.channels_last
                x, grad = x.contiguous(memory_format=layout), grad.contiguous(memory_format=layout)
            spec = (stride, padding, dilation, groups)
            grad_weight = _conv_grad(grad, x, weight, spec, 1).to(saved_weight.dtype)
        return grad_x, grad_weight, None, None, None, None, None


def _conv_grad(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
    spec: tuple[Pair, Pair, Pair, int], which: int,
) -> torch.Tensor:
    """The input (``which=0``) or weight (``1``) gradient of a bias-free convolution."""
    stride, padding, dilation, groups = spec
    wanted = [which == 0, which == 1, False]
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, wanted
    )[which]


def _layout(x: torch.Tensor) -> torch.memory_format:
    """Channels-last for a tensor stored so (and not also plainly contiguous), else NCHW."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    if channels_last and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _Subsample(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, step: Pair) -> torch.Tensor:
        ctx.shape, ctx.step, ctx.layout = x.shape, step, _layout(x)
        return x[..., :: step[0], :: step[1]].contiguous(memory_format=ctx.layout)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad_x = torch.empty(
            ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout
        ).zero_()
        grad_x[..., :: ctx.step[0], :: ctx.step[1]] = grad
        return grad_x, None


def subsample(x: torch.Tensor, step: Pair) -> torch.Tensor:
    """``x[..., ::step[0], ::step[1]]`` copied once in ``x``'s layout (the convolution that reads
    it keeps that copy rather than copying a strided view in its forward and again in its
    backward). With autograd, the backward writes the gradient into one zero tensor, where the
    two slices' backward would fill and copy twice."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Subsample.apply(x, step)
    return x[..., :: step[0], :: step[1]].contiguous(memory_format=_layout(x))
