"""SK for any network: put SK convolutions in place of a model's grouped/depthwise convolutions.

Section 3.2 of the paper: "the proposed SK convolutions can be applied to other lightweight
networks, e.g. MobileNet, ShuffleNet, in which 3x3 depthwise convolutions are extensively used.
By replacing these convolutions with the SK convolutions ...". :func:`convert_to_sk` does this to
an existing ``nn.Module`` (torchvision, timm or your own), in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from sknet.layers import SKConv, init_weights

BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class Replacement:
    """One convolution that :func:`convert_to_sk` replaced.

    Attributes:
        conv: qualified name of the replaced convolution; the :class:`SKConv` now lives there.
        bn: qualified name of its BatchNorm, now an ``nn.Identity`` (each SK branch has its own).
        in_channels: input channels (unchanged).
        out_channels: output channels (unchanged).
        kernel_size: the original kernel, kept by the first branch.
        stride: stride of every branch.
        dilation: the original dilation, kept by the first branch.
        groups: groups of every branch.
        branches: ``(kernel, dilation, groups)`` of each SK branch, the original first.
        copied: whether the first branch holds the original convolution and BatchNorm weights.
    """

    conv: str
    bn: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    dilation: int
    groups: int
    branches: tuple[tuple[int, int, int], ...]
    copied: bool

    def __str__(self) -> str:
        kernels = " + ".join(f"{k}x{k} d{d}" for k, d, _ in self.branches)
        return (
            f"{self.conv} (+ {self.bn}): {self.in_channels}->{self.out_channels}, "
            f"stride {self.stride}, groups {self.groups} -> SK[{kernels}]"
        )


def _eligible(conv: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` with a square odd kernel > 1, groups > 1 and "same" padding."""
    if type(conv) is not nn.Conv2d or conv.groups == 1 or conv.padding_mode != "zeros":
        return False
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    if kh != kw or kh == 1 or kh % 2 == 0 or sh != sw or dh != dw:
        return False
    return conv.padding == (dh * (kh - 1) // 2,) * 2


def _pairs(model: nn.Module) -> list[tuple[nn.Module, str, str, str]]:
    """``(parent, conv name, bn name, qualified prefix)`` for each eligible conv + its BN.

    "Its BN" is the child registered right after the conv in the same parent (``conv2``/``bn2``
    in a torchvision bottleneck, consecutive entries of an ``nn.Sequential``), with the conv's
    output channels. Modules inside an existing :class:`SKConv` are left alone.
    """
    inside_sk = {
        name for name, module in model.named_modules() if isinstance(module, SKConv)
    }
    pairs = []
    for parent_name, parent in model.named_modules():
        if any(parent_name == sk or parent_name.startswith(f"{sk}.") for sk in inside_sk):
            continue
        for (conv_name, conv), (bn_name, bn) in pairwise(parent.named_children()):
            if (
                _eligible(conv)
                and type(bn) in BATCH_NORMS
                and bn.num_features == conv.out_channels
            ):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append((parent, conv_name, bn_name, prefix))
    return pairs


@torch.no_grad()
def _copy_into_first_branch(sk: SKConv, conv: nn.Conv2d, bn: nn.Module) -> None:
    """Load the original conv and BN into branch 0; a conv bias is folded into the BN mean."""
    branch = sk.branches[0]
    branch.conv.weight.copy_(conv.weight)
    target = branch.bn
    target.eps, target.momentum = bn.eps, bn.momentum
    if bn.affine:
        target.weight.copy_(bn.weight)
        target.bias.copy_(bn.bias)
    if bn.track_running_stats and bn.running_mean is not None:
        mean = bn.running_mean - (conv.bias if conv.bias is not None else 0)
        target.running_mean.copy_(mean)
        target.running_var.copy_(bn.running_var)
        target.num_batches_tracked.copy_(bn.num_batches_tracked)


def convert_to_sk(
    model: nn.Module,
    *,
    extra_branches: Sequence[tuple[int, int]] | None = None,
    reduction: int = 16,
    min_dim: int = 32,
    attention: bool = True,
    copy_weights: bool = True,
    include: Callable[[str, nn.Conv2d], bool] | None = None,
) -> list[Replacement]:
    """Replace, in place, each grouped or depthwise k x k conv + BatchNorm by an SK convolution.

    Eligible: an ``nn.Conv2d`` with a square odd kernel k > 1, ``groups > 1`` and "same" padding,
    registered right before its ``nn.BatchNorm2d`` in the same parent module (the layout of
    ResNeXt's grouped 3x3 and of MobileNet/ShuffleNet depthwise convs). Plain convolutions
    (``groups == 1``) are not touched. Each becomes an :class:`~sknet.layers.SKConv` with the
    same in/out channels, stride and groups, whose first branch is the original conv + BN (+
    ReLU) and whose other branches are ``extra_branches``; the BatchNorm becomes
    ``nn.Identity``.

    Activation: every SK branch ends in ReLU (Eq. 1) and the attention mixes the branches with
    positive weights summing to one, so the SK output is already non-negative. A ReLU that
    followed the BN in the original model is left where it is and becomes a no-op, which keeps
    the network exactly the SK network (e.g. torchvision ResNeXt-50 -> SKNet-50). A conv + BN
    that no ReLU followed (ShuffleNetV2's and MobileNetV2's depthwise convs) gains the branch
    ReLUs: the converted unit is the paper's SK unit, not a linear one.

    Args:
        model: the network, modified in place.
        extra_branches: ``(kernel, dilation)`` of each branch added beside the original, with
            the original's groups. Default: one branch with the original kernel and dilation +
            1, i.e. 3x3 -> 3x3 with dilation 2, the paper's "5x5" (SK[2, G, r]).
        reduction: r of Eq. 4.
        min_dim: L of Eq. 4.
        attention: SK attention across branches (``False``: their plain sum, Table 7).
        copy_weights: load the original conv and BN weights into the first branch (a conv bias
            is folded into the BN's running mean); new branches and the attention get He
            initialisation either way.
        include: optional filter ``include(qualified_name, conv) -> bool`` on eligible convs.

    Returns:
        One :class:`Replacement` per replaced convolution, in model order.

    Raises:
        ValueError: if no convolution is eligible.
    """
    replaced = []
    for parent, conv_name, bn_name, prefix in _pairs(model):
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        if include is not None and not include(prefix + conv_name, conv):
            continue
        kernel, stride, dilation = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
        extra = [(kernel, dilation + 1)] if extra_branches is None else list(extra_branches)
        branches = tuple(
            (k, d, conv.groups) for k, d in [(kernel, dilation), *extra]
        )
        sk = SKConv(
            conv.in_channels, conv.out_channels, stride, branches, reduction, min_dim, attention
        )
        init_weights(sk)
        sk.to(device=conv.weight.device, dtype=conv.weight.dtype)
        if copy_weights:
            _copy_into_first_branch(sk, conv, bn)
        sk.train(conv.training)
        setattr(parent, conv_name, sk)
        setattr(parent, bn_name, nn.Identity())
        replaced.append(
            Replacement(
                prefix + conv_name, prefix + bn_name, conv.in_channels, conv.out_channels,
                kernel, stride, dilation, conv.groups, branches, copy_weights,
            )
        )
    if not replaced:
        raise ValueError(
            f"convert_to_sk: no eligible convolution in {type(model).__name__}"
            f"{' (after the include filter)' if include is not None else ''}; SK replaces a k x k "
            "grouped or depthwise nn.Conv2d (k > 1, groups > 1, 'same' padding) registered right "
            "before its BatchNorm2d, as in ResNeXt, MobileNet or ShuffleNet; plain convolutions "
            "(groups=1, e.g. ResNet's) are left alone"
        )
    return replaced
