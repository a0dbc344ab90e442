"""The fast forward of a conv -> BN (-> ReLU) unit (:class:`~sknet.layers.ConvBnAct`).

Same products and sums as the plain unit, in a cheaper arrangement, used only where the
measurements in benchmarks/RESULTS.md say it pays:

* a convolution that only ever reads every ``step``-th pixel runs on the subsampled view
  (:func:`convolve`);
* trained on the CPU with few channels per group, the weight gradient takes a faster route
  (:mod:`sknet.layers.fast.cpu_conv`);
* on the CPU, with the BatchNorm in eval mode (or a frozen norm in eval mode), BN is folded into
  the convolution on the fly when a filter has no more weights than it has outputs
  (:func:`folds_bn`). :func:`sknet.deploy` folds it once for good instead.
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.layers.common import (
    BATCH_NORMS,
    CONV_FUNCTIONS,
    LOCAL_BATCH_NORM_TYPES,
    fold_bn,
)
from sknet.layers.fast.cpu_conv import RoutedConv2d, subsample, weight_grad_route
from sknet.layers.fast.sk_fused import ProjectSK, SKTrain
from sknet.layers.frozen_norm import frozen_norm_types


def folds_bn(unit: nn.Module, x: torch.Tensor) -> bool:
    """Whether the fast forward of ``unit`` on ``x`` folds an eval-mode BN, or a frozen norm in
    eval mode, into the convolution (a frozen norm in training mode keeps its module: unfolded,
    the CPU weight-gradient routes of :func:`convolve` stay open to detection training)."""
    bn = unit.bn
    if bn.training or x.device.type != "cpu":
        # On a GPU the fold measured slower than the BN kernel it saves: ResNeSt-50d's eval,
        # bf16, batch 256, on an H200, 44.65 ms folded against 42.12 ms (benchmarks/RESULTS.md).
        return False
    if not isinstance(bn, frozen_norm_types()) and (
        not isinstance(bn, BATCH_NORMS[unit.dims]) or bn.running_var is None
    ):
        return False
    conv = unit.conv
    # Folding touches every weight once; the BN pass it saves touches every output once.
    outputs_per_filter = x.shape[0]
    for side, step in zip(x.shape[2:], conv.stride, strict=True):
        outputs_per_filter *= side // step
    return conv.weight[0].numel() <= outputs_per_filter


def convolve(
    unit: nn.Module,
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``unit.conv`` alone, with its own weight and bias unless others are given.

    A convolution that only ever reads every ``step``-th pixel runs as a convolution of the
    subsampled view: the same products and sums without the kernels that oneDNN runs far
    slower. That is a dilated convolution whose stride is a multiple of its dilation (the
    stride-2 "5x5" SK branch, 3x3 with dilation 2, becomes an undilated 3x3), and on the CPU
    a strided 1x1 convolution (the projection shortcut, whose oneDNN weight gradient
    otherwise copies the whole input into another layout: 56 ms against 25 ms for
    SKNet-50's first one, batch 8). Trained on the CPU with few channels per group, the
    weight gradient takes a faster route (:mod:`sknet.layers.fast.cpu_conv`). Those measured
    shortcuts are for images; 1D and 3D convolutions run as they are.
    """
    conv = unit.conv
    weight = conv.weight if weight is None else weight
    bias = conv.bias if bias is None else bias
    stride, padding, dilation = conv.stride, conv.padding, conv.dilation
    kernel = conv.kernel_size
    same_padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
    on_cpu = x.device.type == "cpu"
    if padding == same_padding and unit.dims == 2:
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
    return CONV_FUNCTIONS[unit.dims](x, weight, bias, stride, padding, dilation, conv.groups)


def _projects_sk(unit: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``x`` is the output of an SK unit's training function and ``unit`` a training
    conv + BN that can convolve it without keeping it (:class:`ProjectSK`)."""
    bn = unit.bn
    return (
        isinstance(x.grad_fn, SKTrain._backward_cls)
        and isinstance(bn, LOCAL_BATCH_NORM_TYPES)
        and bn.training
        and bn.affine
        and unit.conv.bias is None
    )


def conv_bn_act(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``unit(x)`` for a conv -> BN (-> ReLU) unit: :func:`convolve`, with the BN folded into it
    where :func:`folds_bn` says so, else followed by the BN module; then the ReLU if any."""
    if folds_bn(unit, x):
        out = convolve(unit, x, *fold_bn(unit.conv, unit.bn))
    elif _projects_sk(unit, x):
        conv = unit.conv
        spec = (conv.stride, conv.padding, conv.dilation, conv.groups)
        out = unit.bn(ProjectSK.apply(x, conv.weight, x.grad_fn, spec))
    else:
        out = unit.bn(convolve(unit, x))
    act = getattr(unit, "act", None)
    return out if act is None else act(out)
