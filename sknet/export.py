"""Inference copies of our models: every BatchNorm folded into the convolution before it."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sknet.layers import fold_bn


def deploy(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with every BatchNorm folded into its convolution.

    In eval mode ``BN(conv(x))`` is one convolution with a scaled weight and a bias. Each
    ``Conv2d`` directly followed by a BatchNorm (``BatchNorm2d`` or ``SyncBatchNorm``) in a
    ``nn.Sequential`` (every
    :class:`~sknet.layers.ConvBnAct`, including the fuse of the SK attention, Eq. 3) becomes that
    convolution, and the BatchNorm an ``nn.Identity``; nothing else changes: module names, forward
    hooks (an SK unit's ``attention`` still outputs the weights [N, M, C]) and outputs (equal to
    ``model.eval()``'s up to float rounding). The copy is in eval mode and meant for inference
    only: it has no BatchNorm left to train. ``model`` itself is not modified.

    Raises:
        ValueError: if a BatchNorm does not directly follow a convolution.
    """
    deployed = copy.deepcopy(model).eval()
    with torch.no_grad():
        for parent in deployed.modules():
            if not isinstance(parent, nn.Sequential):
                continue
            names = list(parent._modules)
            for conv_name, bn_name in itertools.pairwise(names):
                conv, bn = parent._modules[conv_name], parent._modules[bn_name]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm):
                    _fold_into(conv, bn)
                    parent._modules[bn_name] = nn.Identity()
    left = [name for name, m in deployed.named_modules() if isinstance(m, _BatchNorm)]
    if left:
        raise ValueError(
            f"deploy: cannot fold BatchNorm {left[0]!r} ({len(left)} in all): it does not "
            "directly follow a Conv2d in an nn.Sequential"
        )
    return deployed


def _fold_into(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    if bn.running_var is None:
        raise ValueError(
            f"deploy: BatchNorm {bn} has no running statistics (track_running_stats=False), so "
            "it normalises by the batch even in eval mode and cannot be folded"
        )
    weight, bias = fold_bn(conv, bn)
    conv.weight = nn.Parameter(weight.detach().clone(), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=conv.weight.requires_grad)
