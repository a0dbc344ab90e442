"""Memory-lean training kernels of the SK convolution (Eqs. 1 and 6).

Autograd would keep, per branch, the convolution output (for BN) and the BN+ReLU output ``U_m``
(for ReLU and for the Select), and then the Select output ``V``: two tensors per branch where a
plain convolution block keeps two in all. These two functions keep only the convolution outputs
and per-channel statistics, and recompute ``U_m = ReLU(scale * conv_out + shift)`` (one cheap
element-wise pass) in the backward:

* :class:`BnReluRecompute`: training-mode BatchNorm + ReLU of one branch; updates the running
  statistics like :class:`torch.nn.BatchNorm2d`.
* :class:`SelectRecompute`: ``V = sum_m a_m U_m`` (Eq. 6); for two branches one fused pass,
  ``V = U_2 + a_1 (U_1 - U_2)``, since the softmax weights sum to one (``a_1`` is the sigmoid of
  the logit difference).
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable


def bn_relu(conv_out: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``ReLU(scale * conv_out + shift)`` with per-channel ``scale`` and ``shift``."""
    shape = (1, -1, 1, 1)
    dtype = conv_out.dtype
    return torch.addcmul(
        shift.to(dtype).reshape(shape), conv_out, scale.to(dtype).reshape(shape)
    ).relu_()


class BnReluRecompute(torch.autograd.Function):
    """``U = ReLU(BN(conv_out))`` with batch statistics, saving ``conv_out`` but not ``U``.

    ``forward(conv_out, weight, bias, running_mean, running_var, momentum, eps)`` returns ``U``
    and the per-channel ``scale``/``shift`` of the normalisation (not differentiable) that
    :class:`SelectRecompute` needs to recompute ``U``.
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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, mean, invstd = torch.ops.aten.native_batch_norm(
            conv_out, weight, bias, running_mean, running_var, True, momentum, eps
        )
        out = out.relu_()
        scale = weight * invstd
        shift = bias - mean * scale
        ctx.save_for_backward(conv_out, weight, mean, invstd, scale, shift)
        ctx.eps = eps
        ctx.mark_non_differentiable(scale, shift)
        return out, scale, shift

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_out: torch.Tensor, _grad_scale: None, _grad_shift: None
    ) -> tuple[torch.Tensor | None, ...]:
        conv_out, weight, mean, invstd, scale, shift = ctx.saved_tensors
        grad_bn = torch.ops.aten.threshold_backward(grad_out, bn_relu(conv_out, scale, shift), 0)
        grad_input, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_bn, conv_out, weight, None, None, mean, invstd, True, ctx.eps,
            list(ctx.needs_input_grad[:3]),
        )
        return grad_input, grad_weight, grad_bias, None, None, None, None


class SelectRecompute(torch.autograd.Function):
    """``V = sum_m a_m U_m`` (Eq. 6) that recomputes the ``U_m`` in its backward.

    ``forward(weights, *tensors)``: ``weights`` are the softmax weights ``[N, M, C]``;
    ``tensors`` are the M branch outputs ``U_m`` (used in the forward only), then the M
    convolution outputs and the M ``scale`` and M ``shift`` vectors of :class:`BnReluRecompute`
    (kept to recompute ``U_m``).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, weights: torch.Tensor, *tensors: torch.Tensor
    ) -> torch.Tensor:
        branches = weights.shape[1]
        features = tensors[:branches]
        out = select(features, weights, inplace=False)
        ctx.save_for_backward(weights, *tensors[branches:])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weights, *saved = ctx.saved_tensors
        branches = weights.shape[1]
        conv_outs = saved[:branches]
        scales = saved[branches : 2 * branches]
        shifts = saved[2 * branches :]
        features = [bn_relu(c, s, t) for c, s, t in zip(conv_outs, scales, shifts, strict=True)]
        dtype = grad.dtype
        sum_dtype = torch.promote_types(dtype, torch.float32)
        if branches == 2:
            # V = U_2 + a_1 (U_1 - U_2) depends on a_1 only.
            a = weights[:, 0, :, None, None].to(dtype)
            diff = features[0].sub_(features[1])
            grad_a = diff.mul_(grad).sum((-2, -1), dtype=sum_dtype)
            grad_weights = torch.stack((grad_a, torch.zeros_like(grad_a)), 1)
            grad_first = grad * a
            grad_features = [grad_first, grad - grad_first]
        else:
            grad_weights = torch.stack(
                [(grad * u).sum((-2, -1), dtype=sum_dtype) for u in features], 1
            )
            grad_features = [
                grad * weights[:, m, :, None, None].to(dtype) for m in range(branches)
            ]
        return (
            grad_weights.to(weights.dtype),
            *grad_features,
            *([None] * (3 * branches)),
        )


def select(
    features: list[torch.Tensor] | tuple[torch.Tensor, ...], weights: torch.Tensor, inplace: bool
) -> torch.Tensor:
    """``V = sum_m a_m U_m`` (Eq. 6) from the branch outputs and the weights ``[N, M, C]``.

    Two branches take one pass, ``V = U_2 + a_1 (U_1 - U_2)`` (a ``lerp``), which holds because
    the softmax weights sum to one. ``inplace`` writes into the branch outputs.
    """
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
