"""The memory-lean training function of the SK convolution (Eqs. 1-6).

With plain autograd an SK unit keeps, per branch, the convolution output (for BN) and the
BN+ReLU output ``U_m`` (for the ReLU and the Select), then the next convolution keeps the Select
output ``V``: 2M + 1 tensors where a plain conv + BN + ReLU keeps two. :class:`SKTrain` keeps
only the M convolution outputs and per-channel vectors: ``U_m = ReLU(scale * conv_out + shift)``
is recomputed in the backward (cheap element-wise passes instead of stored tensors), and since
one function sees the whole unit, its backward recomputes each ``U_m`` once and joins the
gradients that reach ``U_m`` through the pool (Eq. 2) and through the Select (Eq. 6) in one
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

from sknet.layers.common import CONV_FUNCTIONS

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


class SKTrain(torch.autograd.Function):
    """An SK unit in training, from its branch convolution outputs on (Eqs. 1-6), keeping only
    those outputs and per-channel vectors: BN+ReLU, the pool and the Select are recomputed in the
    backward, which then runs each element-wise step once.

    ``forward(attention, running, conv_outs..., bn_weights..., bn_biases..., attention_params...)``:

    * ``attention``: the :class:`~sknet.layers.SKAttention` module, or ``None`` for the naive sum.
      It is called once, in the forward (its hooks see the weights; its BN updates its
      statistics), with autograd on, on a detached copy of the pooled statistics ``s`` (Eq. 2):
      the backward differentiates that small graph (Eqs. 3-5), so whatever the module computes
      gets its exact gradient;
    * ``running``: per branch ``(running_mean, running_var, momentum, eps)`` of its BatchNorm;
    * tensors: the M branch convolution outputs, their M BN weights and M BN biases, then
      ``attention.parameters()`` (passed in so that they get their gradients).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        attention: torch.nn.Module | None,
        running: Sequence[tuple[torch.Tensor | None, torch.Tensor | None, float, float]],
        *tensors: torch.Tensor,
    ) -> torch.Tensor:
        branches = len(running)
        conv_outs = tensors[:branches]
        bn_weights = tensors[branches : 2 * branches]
        bn_biases = tensors[2 * branches : 3 * branches]
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
        weights = ctx.attention_graph = None
        if attention is not None:
            pooled_leaf = pooled.detach().requires_grad_()
            with torch.enable_grad():
                attention_out = attention(pooled_leaf)
            ctx.attention_graph = (pooled_leaf, attention_out)
            weights = attention_out.detach()
        ctx.attention_params = tensors[3 * branches :]
        ctx.eps = [eps for *_, eps in running]
        ctx.features = None
        ctx.save_for_backward(*conv_outs, *bn_weights, *bn_biases, *stats, weights)
        return select(features, weights, inplace=True)

    @staticmethod
    def recompute(ctx: FunctionCtx) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The branch outputs ``U_m`` recomputed from the kept convolution outputs (once per
        backward: :class:`ProjectSK` may ask first), and the attention weights."""
        saved = ctx.saved_tensors
        branches = len(ctx.eps)
        if ctx.features is None:
            conv_outs = saved[:branches]
            bn_weights = saved[branches : 2 * branches]
            bn_biases = saved[2 * branches : 3 * branches]
            stats = saved[3 * branches : 5 * branches]
            scales = [w * invstd for w, invstd in zip(bn_weights, stats[1::2], strict=True)]
            shifts = [
                b - mean * scale
                for b, mean, scale in zip(bn_biases, stats[0::2], scales, strict=True)
            ]
            ctx.features = [
                bn_relu(c, s, t) for c, s, t in zip(conv_outs, scales, shifts, strict=True)
            ]
        return ctx.features, saved[5 * branches]

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        branches = len(ctx.eps)
        conv_outs = saved[:branches]
        bn_weights = saved[branches : 2 * branches]
        stats = saved[3 * branches : 5 * branches]
        features, weights = SKTrain.recompute(ctx)
        ctx.features = None
        dtype = features[0].dtype
        params = ctx.attention_params
        grad_params: list[torch.Tensor | None] = [None] * len(params)
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
            pooled_leaf, attention_out = ctx.attention_graph
            ctx.attention_graph = None
            trained = [i for i, param in enumerate(params) if param.requires_grad]
            grad_pooled, *found = torch.autograd.grad(
                attention_out, [pooled_leaf, *(params[i] for i in trained)],
                grad_weights.to(attention_out.dtype),
            )
            for i, param_grad in zip(trained, found, strict=True):
                grad_params[i] = param_grad
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
                [ctx.needs_input_grad[2 + m], True, True],
            )
            grad_inputs.append(grad_input)
            grad_gammas.append(grad_gamma)
            grad_betas.append(grad_beta)
        return (None, None, *grad_inputs, *grad_gammas, *grad_betas, *grad_params)


ConvSpec = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int]
"""``(stride, padding, dilation, groups)`` of a convolution."""


class ProjectSK(torch.autograd.Function):
    """A bias-free convolution of an SK unit's output ``V`` (the output of :class:`SKTrain`)
    that does not keep ``V`` for its weight gradient: its backward recomputes ``V`` (Eq. 6) from
    the unit's kept convolution outputs, which :class:`SKTrain`'s backward then reuses. An SK
    bottleneck then keeps as many tensors as a ResNeXt one.

    ``forward(v, weight, unit, spec)``: ``unit`` is ``v.grad_fn`` (the :class:`SKTrain` node),
    ``spec`` the convolution's :data:`ConvSpec`.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, v: torch.Tensor, weight: torch.Tensor, unit: FunctionCtx, spec: ConvSpec
    ) -> torch.Tensor:
        ctx.unit, ctx.spec = unit, spec
        ctx.save_for_backward(weight)
        return CONV_FUNCTIONS[v.dim() - 2](v, weight.to(v.dtype), None, *spec)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (weight,) = ctx.saved_tensors
        features, weights = SKTrain.recompute(ctx.unit)
        v = select(features, weights, inplace=False)
        stride, padding, dilation, groups = ctx.spec
        grad_v, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, v, weight.to(v.dtype), None, stride, padding, dilation, False,
            [0] * (grad.dim() - 2), groups, [*ctx.needs_input_grad[:2], False],
        )
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        ctx.unit = None
        return grad_v, grad_weight, None, None
