"""Memory-lean training kernels of the SK convolution (Eqs. 1, 2 and 6).

With plain autograd an SK unit keeps, per branch, the convolution output (for BN) and the
BN+ReLU output ``U_m`` (for the ReLU and the Select), then the Select output ``V`` (for the next
convolution): 2M + 1 tensors where a plain conv + BN + ReLU keeps two. These functions keep only
the M convolution outputs and per-channel vectors, and recompute ``U_m = ReLU(scale * conv_out +
shift)`` (and ``V``) in the backward, cheap element-wise passes instead of stored tensors:

* :class:`BnReluPool`: training-mode BatchNorm + ReLU of one branch and its global average pool
  (Eq. 2), whose two gradients meet in one pass; updates the running statistics like
  :class:`torch.nn.BatchNorm2d`.
* :class:`SelectProject`: ``V = sum_m a_m U_m`` (Eq. 6), or the naive sum, optionally followed by
  the next 1x1 convolution so that ``V`` need not be kept either. For two branches the Select is
  one fused pass, ``V = U_2 + a_1 (U_1 - U_2)``: the softmax weights sum to one, so ``a_1`` is the
  sigmoid of the logit difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

ConvSpec = tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]
"""``(stride, padding, dilation, groups)`` of a convolution."""


def bn_relu(
    conv_out: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, relu: bool = True
) -> torch.Tensor:
    """``ReLU(scale * conv_out + shift)`` (without the ReLU unless ``relu``), per channel.

    Runs as an inference-mode BatchNorm with zero mean and unit variance, one fused pass, which
    CPU and GPU kernels do faster than a broadcasting ``addcmul``.
    """
    out = F.batch_norm(
        conv_out, torch.zeros_like(scale), torch.ones_like(scale), scale, shift, False, 0.0, 0.0
    )
    return out.relu_() if relu else out


def select(
    features: Sequence[torch.Tensor], weights: torch.Tensor | None, inplace: bool
) -> torch.Tensor:
    """``V = sum_m a_m U_m`` (Eq. 6) from the branch outputs and the weights ``[N, M, C]``.

    ``weights=None`` is the naive sum of Table 7. Two branches take one pass,
    ``V = U_2 + a_1 (U_1 - U_2)`` (a ``lerp``), which holds because the softmax weights sum to
    one. ``inplace`` writes into the branch outputs (``U_2``, or ``U_1`` for M != 2).
    """
    if weights is None:
        out = features[0]
        for feature in features[1:]:
            out = out.add_(feature) if inplace else out + feature
        return out
    dtype = features[0].dtype
    weight = [weights[:, m, :, None, None].to(dtype) for m in range(len(features))]
    if len(features) == 2:
        if inplace:
            return features[1].lerp_(features[0], weight[0])
        return torch.lerp(features[1], features[0], weight[0])
    out = features[0].mul_(weight[0]) if inplace else features[0] * weight[0]
    for feature, a in zip(features[1:], weight[1:], strict=True):
        out = out.addcmul_(feature, a)
    return out


class BnReluPool(torch.autograd.Function):
    """``U = ReLU(BN(conv_out))`` with batch statistics, and ``U``'s spatial mean, keeping
    ``conv_out`` but not ``U``.

    ``forward(conv_out, weight, bias, running_mean, running_var, momentum, eps, pool)`` returns
    ``U``, its mean over H and W ([N, C]; ``None`` unless ``pool``) and the per-channel ``scale``
    and ``shift`` of the normalisation (not differentiable) that :class:`SelectProject` needs to
    recompute ``U``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        conv_out: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        momentum: float,
        eps: float,
        pool: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        out, mean, invstd = torch.ops.aten.native_batch_norm(
            conv_out, weight, bias, running_mean, running_var, True, momentum, eps
        )
        out = out.relu_()
        scale = weight * invstd
        shift = bias - mean * scale
        ctx.save_for_backward(conv_out, weight, mean, invstd, scale, shift)
        ctx.eps = eps
        ctx.mark_non_differentiable(scale, shift)
        return out, out.mean((-2, -1)) if pool else None, scale, shift

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx,
        grad_out: torch.Tensor,
        grad_pooled: torch.Tensor | None,
        _grad_scale: None,
        _grad_shift: None,
    ) -> tuple[torch.Tensor | None, ...]:
        conv_out, weight, mean, invstd, scale, shift = ctx.saved_tensors
        if grad_pooled is not None:
            area = conv_out.shape[-2] * conv_out.shape[-1]
            grad_out = grad_out + (grad_pooled / area)[:, :, None, None].to(grad_out.dtype)
        # The ReLU passes the gradient where its input is positive.
        pre_relu = bn_relu(conv_out, scale, shift, relu=False)
        grad_bn = torch.ops.aten.threshold_backward.grad_input(
            grad_out, pre_relu, 0, grad_input=pre_relu
        )
        grad_input, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_bn, conv_out, weight, None, None, mean, invstd, True, ctx.eps,
            list(ctx.needs_input_grad[:3]),
        )
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


class SelectProject(torch.autograd.Function):
    """``V = sum_m a_m U_m`` (Eq. 6) or the naive sum, optionally followed by a convolution, that
    recomputes the ``U_m`` (and ``V``) in its backward.

    ``forward(weights, project_weight, project_spec, *tensors)``: ``weights`` are the softmax
    weights ``[N, M, C]`` (``None``: naive sum); ``project_weight`` and ``project_spec``
    (:data:`ConvSpec`) describe a bias-free convolution applied to ``V`` (``None``: return ``V``
    itself, written over a branch output); ``tensors`` are the M branch outputs ``U_m`` (read in
    the forward only, and overwritten), then the M convolution outputs and the M ``scale`` and M
    ``shift`` vectors of :class:`BnReluPool` (kept to recompute ``U_m``).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        weights: torch.Tensor | None,
        project_weight: torch.Tensor | None,
        project_spec: ConvSpec | None,
        *tensors: torch.Tensor,
    ) -> torch.Tensor:
        branches = len(tensors) // 4
        # The U_m exist only to feed this function (BnReluPool keeps none), so V overwrites one;
        # were one kept by anything, autograd's version check would still catch it.
        out = select(tensors[:branches], weights, inplace=True)
        if project_weight is None:
            ctx.mark_dirty(out)
        else:
            out = F.conv2d(out, project_weight.to(out.dtype), None, *project_spec)
        ctx.project_spec = project_spec
        ctx.save_for_backward(weights, project_weight, *tensors[branches:])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weights, project_weight, *saved = ctx.saved_tensors
        branches = len(saved) // 3
        conv_outs = saved[:branches]
        scales = saved[branches : 2 * branches]
        shifts = saved[2 * branches :]
        if weights is None and project_weight is None:
            return None, None, None, *([grad] * branches), *([None] * (3 * branches))
        # One recomputed buffer per branch, reused in place for that branch's gradient.
        features = [bn_relu(c, s, t) for c, s, t in zip(conv_outs, scales, shifts, strict=True)]
        dtype = features[0].dtype
        grad_project = None
        if project_weight is not None:
            stride, padding, dilation, groups = ctx.project_spec
            grad, grad_project, _ = torch.ops.aten.convolution_backward(
                grad, select(features, weights, inplace=False), project_weight.to(dtype),
                None, stride, padding, dilation, False, [0, 0], groups,
                [True, ctx.needs_input_grad[1], False],
            )
            if grad_project is not None:
                grad_project = grad_project.to(project_weight.dtype)
        if weights is None:
            return None, grad_project, None, *([grad] * branches), *([None] * (3 * branches))
        sum_dtype = torch.promote_types(dtype, torch.float32)
        weight = [weights[:, m, :, None, None].to(dtype) for m in range(branches)]
        if branches == 2:
            # V = U_2 + a_1 (U_1 - U_2) depends on a_1 only.
            grad_a = features[0].sub_(features[1]).mul_(grad).sum((-2, -1), dtype=sum_dtype)
            grad_weights = torch.stack((grad_a, torch.zeros_like(grad_a)), 1)
            grad_first = torch.mul(grad, weight[0], out=features[0])
            grad_features = [grad_first, torch.sub(grad, grad_first, out=features[1])]
        else:
            grad_weights = torch.stack(
                [u.mul_(grad).sum((-2, -1), dtype=sum_dtype) for u in features], 1
            )
            grad_features = [
                torch.mul(grad, a, out=u) for u, a in zip(features, weight, strict=True)
            ]
        return (
            grad_weights.to(weights.dtype),
            grad_project,
            None,
            *grad_features,
            *([None] * (3 * branches)),
        )
