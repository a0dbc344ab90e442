"""The fast forward of an SK unit (:class:`~sknet.layers.SKConv`, Eqs. 1-6).

The same function as the plain forward without the waste of a literal implementation:

* no stacked copy of the branch outputs: the pool of ``U`` is the sum of each branch's pool,
  and for two branches the Select is one pass, ``V = U_2 + a_1 (U_1 - U_2)`` (the softmax
  weights sum to one: ``a_1`` is the sigmoid of the logit difference);
* inference: each branch runs its fast forward (eval-mode BN folded into the convolution where
  that pays), and without autograd the Select writes into a branch output;
* training with autograd: :class:`~sknet.layers.fast.sk_fused.SKTrain` keeps only the branch
  convolution outputs and recomputes BN+ReLU in the backward. The branch convolutions and
  BatchNorms are then run directly (not through their modules' hooks); the SK unit and its
  attention module are called as usual.
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.layers.common import LOCAL_BATCH_NORM_TYPES, spatial_dims
from sknet.layers.fast.conv import convolve
from sknet.layers.fast.sk_fused import SKTrain, select


def sk_conv(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for an :class:`~sknet.layers.SKConv`, by the fast path."""
    if len(layer.branches) > 1 and _trains_with_autograd(layer):
        return _forward_training(layer, x)
    return _forward_inference(layer, x)


def _trains_with_autograd(layer: nn.Module) -> bool:
    """Whether the memory-lean training function applies: autograd on, and every branch a
    training-mode BatchNorm after a bias-free convolution."""
    return torch.is_grad_enabled() and all(
        _trains_bn(branch) and branch.conv.bias is None for branch in layer.branches
    )


def _branch_inputs(layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """What each branch reads: ``x`` itself, or with ``split_input`` its m-th channel slice."""
    if layer.split_input:
        return list(x.chunk(len(layer.branches), dim=1))
    return [x] * len(layer.branches)


def _forward_inference(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Each branch runs its own (fast) forward, the pool reads each branch once, and without
    autograd the Select writes into the branch outputs."""
    if len(layer.branches) == 1:
        return layer.branches[0](x)
    inplace = not torch.is_grad_enabled()
    parts = _branch_inputs(layer, x)
    features = [branch(part) for branch, part in zip(layer.branches, parts, strict=True)]
    weights = None
    if layer.attention is not None:
        spatial = spatial_dims(layer.dims)
        pooled = features[0].mean(spatial)
        for feature in features[1:]:
            pooled = pooled + feature.mean(spatial)
        weights = layer.attention(pooled)
    return select(features, weights, inplace)


def _forward_training(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Training with autograd: keep the branch convolution outputs, recompute the rest."""
    parts = _branch_inputs(layer, x)
    conv_outs = [convolve(branch, part) for branch, part in zip(layer.branches, parts, strict=True)]
    bns = [branch.bn for branch in layer.branches]
    running = [(bn.running_mean, bn.running_var, _bn_momentum(bn), bn.eps) for bn in bns]
    tensors = [*conv_outs, *(bn.weight for bn in bns), *(bn.bias for bn in bns)]
    attention = layer.attention
    if attention is not None:
        tensors += attention.parameters()
    return SKTrain.apply(attention, running, *tensors)


def _trains_bn(unit: nn.Module) -> bool:
    """Whether ``unit`` is a conv + training-mode BN (+ ReLU) that the fused path can run (a
    ``SyncBatchNorm`` normalises over every process: it is left to its module)."""
    bn = getattr(unit, "bn", None)
    return isinstance(bn, LOCAL_BATCH_NORM_TYPES) and bn.training and bn.affine


def _bn_momentum(bn: nn.Module) -> float:
    """The running-average factor the BatchNorm module would use for this batch."""
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            return 1.0 / float(bn.num_batches_tracked)
    return 0.0 if bn.momentum is None else bn.momentum
