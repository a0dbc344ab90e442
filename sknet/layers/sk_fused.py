"""The memory-lean training function of the SK convolution (Eqs. 1-6).

With plain autograd an SK unit keeps, per branch, the convolution output (for BN) and the
BN+ReLU output ``U_m`` (for the ReLU and the Select), then the Select output ``V`` (for the next
convolution): 2M + 1 tensors where a plain conv + BN + ReLU keeps two. :class:`SKTrain` keeps
only the M convolution outputs and per-channel vectors: ``U_m = ReLU(scale * conv_out + shift)``
and ``V`` are recomputed in the backward (cheap element-wise passes instead of stored tensors),
and since one function sees the whole unit, its backward recomputes each ``U_m`` once and joins
the gradients that reach ``U_m`` through the pool (Eq. 2) and through the Select (Eq. 6) in one
pass. For two branches the Select is one fused pass, ``V = U_2 + a_1 (U_1 - U_2)``: the softmax
weights sum to one, so ``a_1`` is the sigmoid of the logit difference. Everything here works on
``[N, C, *spatial]`` tensors of 1, 2 or 3 spatial dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

from sknet.layers.conv_bn import CONV_FUNCTIONS

ConvSpec = tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]
"""``(stride, padding, dilation, groups)`` of a convolution."""


_UNIT_EPS = 2.0**-16
"""An ``eps`` that cuDNN accepts (>= 1e-5) and with ``1 - eps`` exact in fp32."""


def bn_relu(
    conv_out: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, relu: bool = True
) -> torch.Tensor:
    """``ReLU(scale * conv_out + shift)`` (without the ReLU unless ``relu``), per channel.

    Runs as an inference-mode BatchNorm with zero mean and unit variance, one fused pass, which
    CPU and GPU kernels do faster than a broadcasting ``addcmul``. The variance is stored as
    ``1 - eps`` so that ``var + eps`` is exactly 1 (``scale`` is fp32 or fp64): some PyTorch
    releases and cuDNN reject an ``eps`` of zero or below 1e-5.
    """
    variance = torch.full_like(scale, 1 - _UNIT_EPS)
    out = F.batch_norm(
        conv_out, torch.zeros_like(scale), variance, scale, shift, False, 0.0, _UNIT_EPS
    )
    return out.relu_() if relu else out


def per_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` [N, C] shaped to broadcast over the spatial axes of ``like`` [N, C, ...]."""
    return values.view(*values.shape, *[1] * (like.dim() - 2))


def spatial(x: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes of an ``[N, C, *spatial]`` tensor."""
    return tuple(range(2, x.dim()))


def affine_per_sample(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``scale * x + shift`` with ``scale``, ``shift`` of shape [N, C] (one value per sample and
    channel): for a contiguous NCHW ``x``, the BN pass of :func:`bn_relu` over N*C channels."""
    if not x.is_contiguous():
        scale, shift = (per_channel(t.to(x.dtype), x) for t in (scale, shift))
        return torch.addcmul(shift, x, scale)
    dtype = torch.promote_types(x.dtype, torch.float32)
    batch, channels = x.shape[:2]
    flat = x.view(1, batch * channels, *x.shape[2:])
    out = bn_relu(flat, scale.flatten().to(dtype), shift.flatten().to(dtype), relu=False)
    return out.view_as(x)


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
    weight = [per_channel(weights[:, m], features[0]).to(dtype) for m in range(len(features))]
    if len(features) == 2:
        if inplace:
            return features[1].lerp_(features[0], weight[0])
        return torch.lerp(features[1], features[0], weight[0])
    out = features[0].mul_(weight[0]) if inplace else features[0] * weight[0]
    for feature, a in zip(features[1:], weight[1:], strict=True):
        out = out.addcmul_(feature, a)
    return out


def attention_backward(
    attention: torch.nn.Module, pooled: torch.Tensor, weights: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Gradients of :class:`~sknet.layers.SKAttention` in training mode (Eqs. 3-5).

    Recomputes the tiny MLP ``a = softmax(W_2 ReLU(BN(W_1 s)))`` from the pooled statistics
    ``pooled`` [N, C] (in at least fp32) and returns the gradients of ``pooled``, ``W_1``, the
    BN weight and bias, and ``W_2``, given ``grad`` of the weights [N, M, C].
    """
    dtype = torch.promote_types(pooled.dtype, torch.float32)
    conv, bn, select_conv = attention.fuse.conv, attention.fuse.bn, attention.select
    w1 = conv.weight.flatten(1).to(dtype)
    w2 = select_conv.weight.flatten(1).to(dtype)
    pooled = pooled.to(dtype)
    linear = F.linear(pooled, w1)[:, :, None, None]
    normed, mean, invstd = torch.ops.aten.native_batch_norm(
        linear, bn.weight, bn.bias, None, None, True, 0.0, bn.eps
    )
    hidden = normed.flatten(1).relu_()
    weights, grad = weights.to(dtype), grad.to(dtype)
    # Softmax over the branch axis, then the select matrix W_2.
    grad_logits = weights * (grad - (weights * grad).sum(1, keepdim=True))
    grad_logits = grad_logits.flatten(1)
    grad_w2 = grad_logits.t() @ hidden
    grad_hidden = (grad_logits @ w2).where(hidden > 0, 0.0)[:, :, None, None]
    grad_linear, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
        grad_hidden, linear, bn.weight, None, None, mean, invstd, True, bn.eps,
        [True, True, True],
    )
    grad_linear = grad_linear.flatten(1)
    return (
        grad_linear @ w1,
        (grad_linear.t() @ pooled).view_as(conv.weight).to(conv.weight.dtype),
        grad_gamma,
        grad_beta,
        grad_w2.view_as(select_conv.weight).to(select_conv.weight.dtype),
    )


class SKTrain(torch.autograd.Function):
    """An SK unit in training, from its branch convolution outputs on (Eqs. 1-6), keeping only
    those outputs and per-channel vectors: BN+ReLU, the pool, the Select and (optionally) the
    next convolution are recomputed in the backward, which then runs each element-wise step once.

    ``forward(attention, project_spec, running, conv_outs..., bn_weights..., bn_biases...,
    attention_params..., project_weight)``:

    * ``attention``: the :class:`~sknet.layers.SKAttention` module, called once in the forward
      (its hooks see the weights; its BN updates its statistics), or ``None`` for the naive sum;
    * ``project_spec``: :data:`ConvSpec` of a bias-free convolution applied to ``V``, or ``None``;
    * ``running``: per branch ``(running_mean, running_var, momentum, eps)`` of its BatchNorm;
    * tensors: the M branch convolution outputs, their M BN weights and M BN biases, then (with
      attention) ``W_1``, the fuse BN weight and bias and ``W_2`` (only for their gradients), then
      (with a projection) its weight.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        attention: torch.nn.Module | None,
        project_spec: ConvSpec | None,
        running: Sequence[tuple[torch.Tensor | None, torch.Tensor | None, float, float]],
        *tensors: torch.Tensor,
    ) -> torch.Tensor:
        branches = len(running)
        conv_outs = tensors[:branches]
        bn_weights = tensors[branches : 2 * branches]
        bn_biases = tensors[2 * branches : 3 * branches]
        project_weight = tensors[-1] if project_spec is not None else None
        features, stats, pooled = [], [], None
        for conv_out, weight, bias, (mean, var, momentum, eps) in zip(
            conv_outs, bn_weights, bn_biases, running, strict=True
        ):
            out, batch_mean, invstd = torch.ops.aten.native_batch_norm(
                conv_out, weight, bias, mean, var, True, momentum, eps
            )
            features.append(out.relu_())
            stats += [batch_mean, invstd]
            if attention is not None:
                branch_pool = out.mean(spatial(out))
                pooled = branch_pool if pooled is None else pooled + branch_pool
        weights = None if attention is None else attention(pooled)
        out = select(features, weights, inplace=True)
        if project_weight is not None:
            convolution = CONV_FUNCTIONS[out.dim() - 2]
            out = convolution(out, project_weight.to(out.dtype), None, *project_spec)
        ctx.attention, ctx.project_spec = attention, project_spec
        ctx.eps = [eps for *_, eps in running]
        ctx.save_for_backward(
            *conv_outs, *bn_weights, *bn_biases, *stats, pooled, weights, project_weight
        )
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        branches = len(ctx.eps)
        conv_outs = saved[:branches]
        bn_weights = saved[branches : 2 * branches]
        bn_biases = saved[2 * branches : 3 * branches]
        stats = saved[3 * branches : 5 * branches]
        pooled, weights, project_weight = saved[5 * branches :]
        scales = [w * invstd for w, invstd in zip(bn_weights, stats[1::2], strict=True)]
        shifts = [
            b - mean * scale
            for b, mean, scale in zip(bn_biases, stats[0::2], scales, strict=True)
        ]
        features = [bn_relu(c, s, t) for c, s, t in zip(conv_outs, scales, shifts, strict=True)]
        dtype = features[0].dtype
        grad_project = None
        if project_weight is not None:
            stride, padding, dilation, groups = ctx.project_spec
            grad, grad_project, _ = torch.ops.aten.convolution_backward(
                grad, select(features, weights, inplace=False), project_weight.to(dtype),
                None, stride, padding, dilation, False, [0] * (grad.dim() - 2), groups,
                [True, ctx.needs_input_grad[-1], False],
            )
            if grad_project is not None:
                grad_project = grad_project.to(project_weight.dtype)
        grad_attention: tuple[torch.Tensor | None, ...] = ()
        grads_pre_relu = [grad] * branches  # naive sum: every branch gets V's gradient
        if weights is not None:
            sum_dtype = torch.promote_types(dtype, torch.float32)
            if branches == 2:
                # V = U_2 + a_1 (U_1 - U_2) depends on a_1 only.
                grad_a = (features[0] - features[1]).mul_(grad).sum(spatial(grad), dtype=sum_dtype)
                grad_weights = torch.stack((grad_a, torch.zeros_like(grad_a)), 1)
            else:
                grad_weights = torch.stack(
                    [(grad * u).sum(spatial(grad), dtype=sum_dtype) for u in features], 1
                )
            grad_pooled, *grad_attention = attention_backward(
                ctx.attention, pooled, weights, grad_weights
            )
            # d pooled / d U_m = 1 / (H W) for every branch (Eq. 2), joined with the Select's.
            area = math.prod(grad.shape[2:])
            grad_pooled = grad_pooled / area
            grads_pre_relu = [
                affine_per_sample(grad, weights[:, m], grad_pooled) for m in range(branches)
            ]
        grad_inputs, grad_gammas, grad_betas = [], [], []
        for m in range(branches):
            # The ReLU passes the gradient where its output is positive; BN's backward follows.
            grad_bn = torch.ops.aten.threshold_backward.grad_input(
                grads_pre_relu[m], features[m], 0, grad_input=features[m]
            )
            grad_input, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
                grad_bn, conv_outs[m], bn_weights[m], None, None, stats[2 * m],
                stats[2 * m + 1], True, ctx.eps[m],
                [ctx.needs_input_grad[3 + m], True, True],
            )
            grad_inputs.append(grad_input)
            grad_gammas.append(grad_gamma)
            grad_betas.append(grad_beta)
        grad_project_tuple = (grad_project,) if project_weight is not None else ()
        return (
            None, None, None, *grad_inputs, *grad_gammas, *grad_betas, *grad_attention,
            *grad_project_tuple,
        )
