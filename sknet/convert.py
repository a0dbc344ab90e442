"""SK for any network: put SK convolutions in place of a model's k x k convolutions.

Section 3.2 of the paper: "the proposed SK convolutions can be applied to other lightweight
networks, e.g. MobileNet, ShuffleNet, in which 3x3 depthwise convolutions are extensively used.
By replacing these convolutions with the SK convolutions ...". :func:`convert_to_sk` does this to
an existing ``nn.Module`` (torchvision, timm or your own), in place: grouped and depthwise
convolutions as in SKNet, ungrouped ones as in SK-ResNet, with or without a BatchNorm after them,
in 1, 2 or 3 spatial dimensions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from sknet.errors import UserError
from sknet.layers import SKConv, SKConv1d, SKConv3d, init_weights
from sknet.layers.common import BATCH_NORM_TYPES

SK_LAYERS: dict[type[nn.Module], type[SKConv]] = {
    nn.Conv1d: SKConv1d, nn.Conv2d: SKConv, nn.Conv3d: SKConv3d,
}
"""The SK layer that replaces each kind of convolution."""


@dataclass(frozen=True)
class Replacement:
    """One convolution that :func:`convert_to_sk` replaced.

    Attributes:
        conv: qualified name of the replaced convolution; the :class:`SKConv` now lives there.
        bn: qualified name of its BatchNorm, now an ``nn.Identity`` (each SK branch has its own),
            or ``None`` for a convolution that no BatchNorm followed.
        in_channels: input channels (unchanged).
        out_channels: output channels (unchanged).
        kernel_size: the original kernel, kept by the first branch.
        stride: stride of every branch.
        dilation: the original dilation, kept by the first branch.
        groups: the original convolution's groups.
        branches: ``(kernel, dilation, groups)`` of each SK branch, the original first.
        split_input: whether the branches split the input channels between them.
        copied: whether the first branch holds the original convolution (and BatchNorm) weights.
        dims: spatial dimensions (1, 2 or 3).
    """

    conv: str
    bn: str | None
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    dilation: int
    groups: int
    branches: tuple[tuple[int, int, int], ...]
    split_input: bool
    copied: bool
    dims: int = 2

    def __str__(self) -> str:
        kernels = " + ".join(f"{k}x{k} d{d} g{g}" for k, d, g in self.branches)
        bn = f" (+ {self.bn})" if self.bn else ""
        split = ", input split" if self.split_input else ""
        return (
            f"{self.conv}{bn}: {self.in_channels}->{self.out_channels}, stride {self.stride}, "
            f"groups {self.groups} -> SK[{kernels}{split}]"
        )


def _eligible(conv: nn.Module) -> bool:
    """A plain convolution with a cubic odd kernel > 1, one stride and dilation on every axis and
    "same" padding."""
    if type(conv) not in SK_LAYERS or conv.padding_mode != "zeros":
        return False
    kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
    if len({*kernel}) != 1 or len({*stride}) != 1 or len({*dilation}) != 1:
        return False
    if kernel[0] == 1 or kernel[0] % 2 == 0:
        return False
    if conv.padding == "same":  # (torch allows it at stride 1 only)
        return True
    return conv.padding == tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))


def _candidates(model: nn.Module) -> list[tuple[nn.Module, str, str | None, str]]:
    """``(parent, conv name, bn name or None, qualified prefix)`` for each eligible conv.

    "Its BN" is the child registered right after the conv in the same parent (``conv2``/``bn2``
    in a torchvision bottleneck, consecutive entries of an ``nn.Sequential``), with the conv's
    output channels. Modules inside an existing :class:`SKConv` are left alone, and so is the
    model's first convolution when ungrouped (the stem that reads the input: SKNet and SK-ResNet
    keep it plain).
    """
    inside_sk = {
        name for name, module in model.named_modules() if isinstance(module, SKConv)
    }
    first = next((module for module in model.modules() if type(module) in SK_LAYERS), None)
    found = []
    for parent_name, parent in model.named_modules():
        if any(parent_name == sk or parent_name.startswith(f"{sk}.") for sk in inside_sk):
            continue
        children = [*parent.named_children(), (None, None)]
        for (name, conv), (next_name, after) in pairwise(children):
            if not _eligible(conv) or (conv is first and conv.groups == 1):
                continue
            fits = type(after) in BATCH_NORM_TYPES and after.num_features == conv.out_channels
            prefix = f"{parent_name}." if parent_name else ""
            found.append((parent, name, next_name if fits else None, prefix))
    return found


@torch.no_grad()
def _copy_into_first_branch(sk: SKConv, conv: nn.Module, bn: nn.Module | None) -> None:
    """Load the original conv (and BN) into branch 0. A conv bias is folded into the BN: into its
    running mean after a BN, into the new BN's shift where there was none (which, at running mean
    0 and variance 1, then computes the original convolution in eval mode)."""
    branch = sk.branches[0]
    branch.conv.weight.copy_(conv.weight)
    target = branch.bn
    bias = conv.bias if conv.bias is not None else 0
    if bn is None:
        target.bias.add_(bias)
        return
    target.eps, target.momentum = bn.eps, bn.momentum
    if bn.affine:
        target.weight.copy_(bn.weight)
        target.bias.copy_(bn.bias)
    if bn.track_running_stats and bn.running_mean is not None:
        target.running_mean.copy_(bn.running_mean - bias)
        target.running_var.copy_(bn.running_var)
        target.num_batches_tracked.copy_(bn.num_batches_tracked)


def _branches(
    conv: nn.Module,
    extra_branches: Sequence[tuple[int, int]] | None,
    groups: int | None,
    split_input: bool | None,
) -> tuple[tuple[tuple[int, int, int], ...], bool]:
    """The SK branches for ``conv`` and whether they split its input."""
    kernel, dilation = conv.kernel_size[0], conv.dilation[0]
    extra = [(kernel, dilation + 1)] if extra_branches is None else list(extra_branches)
    if conv.groups > 1:
        branch_groups, split = conv.groups, bool(split_input)
    else:
        branch_groups = 1 if groups is None else groups
        split = branch_groups == 1 if split_input is None else split_input
    specs = [(kernel, dilation), *extra]
    if split and conv.in_channels % len(specs):
        split = False  # the input cannot be shared out: each branch reads all of it
    return tuple((k, d, branch_groups) for k, d in specs), split


def convert_to_sk(
    model: nn.Module,
    *,
    extra_branches: Sequence[tuple[int, int]] | None = None,
    reduction: int = 16,
    min_dim: int = 32,
    attention: bool = True,
    groups: int | None = None,
    split_input: bool | None = None,
    copy_weights: bool = True,
    include: Callable[[str, nn.Module], bool] | None = None,
) -> list[Replacement]:
    """Replace, in place, each k x k convolution (+ its BatchNorm) by an SK convolution.

    Eligible: an ``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d`` with an odd kernel k > 1 (the
    same on every axis), one stride and dilation, and "same" padding; but not the model's first
    convolution if it is ungrouped (the stem, which reads the input). Each becomes an
    :class:`~sknet.layers.SKConv` (or :class:`~sknet.layers.SKConv1d`,
    :class:`~sknet.layers.SKConv3d`) with the same in/out channels and stride, whose first branch
    is the original kernel and dilation and whose other branches are ``extra_branches``:

    * a grouped or depthwise conv (ResNeXt, MobileNet, ShuffleNet) keeps its groups in every
      branch, as in SKNet;
    * an ungrouped conv (ResNet, VGG, U-Nets, YOLO backbones) gets, by default, ungrouped branches
      that each read their share of the input channels (``split_input``, timm's SK-ResNet),
      which keeps the parameters near those of the original; ``groups=G`` gives G-group branches
      on the whole input instead, as SKNet's SK[M, G].

    The BatchNorm registered right after the conv in its parent becomes ``nn.Identity`` (each
    branch has its own). A conv that no BatchNorm follows is replaced alone: the SK branches
    bring their BatchNorm.

    Activation: every SK branch ends in ReLU (Eq. 1) and the attention mixes the branches with
    positive weights summing to one, so the SK output is non-negative. A ReLU that followed the
    original conv (+ BN) is left where it is and becomes a no-op, which keeps the network exactly
    the SK network (torchvision ResNeXt-50 -> SKNet-50). A conv that no ReLU followed
    (ShuffleNetV2's and MobileNetV2's depthwise convs, a network's last conv) gains the branch
    ReLUs; leave such a conv out with ``include`` where a signed output matters.

    Args:
        model: the network, modified in place.
        extra_branches: ``(kernel, dilation)`` of each branch added beside the original. Default:
            one branch with the original kernel and dilation + 1, i.e. 3x3 -> 3x3 with dilation
            2, the paper's "5x5" (SK[2, G, r]).
        reduction: r of Eq. 4.
        min_dim: L of Eq. 4.
        attention: SK attention across branches (``False``: their plain sum, Table 7).
        groups: groups of the branches that replace an ungrouped conv (default 1, with split
            input); grouped convs keep their own.
        split_input: whether the branches split the input channels (default: for ungrouped
            convs with ungrouped branches; never where the channels do not divide).
        copy_weights: load the original conv and BN weights into the first branch where it has
            the original's shape (not with a split input or other groups); a conv bias is folded
            into the BatchNorm. New branches and the attention get He initialisation either way.
        include: optional filter ``include(qualified_name, conv) -> bool`` on eligible convs.

    Returns:
        One :class:`Replacement` per replaced convolution, in model order.

    Raises:
        ValueError: if no convolution is eligible.
    """
    replaced = []
    for parent, conv_name, bn_name, prefix in _candidates(model):
        conv = getattr(parent, conv_name)
        bn = getattr(parent, bn_name) if bn_name is not None else None
        if include is not None and not include(prefix + conv_name, conv):
            continue
        branches, split = _branches(conv, extra_branches, groups, split_input)
        layer = SK_LAYERS[type(conv)]
        try:
            sk = layer(
                conv.in_channels, conv.out_channels, conv.stride[0], branches, reduction,
                min_dim, attention, split,
            )
        except ValueError as error:  # groups that do not divide the (split) channels
            raise UserError(
                f"convert_to_sk: {prefix + conv_name} ({conv.in_channels}->{conv.out_channels}, "
                f"groups {conv.groups}) cannot take SK[{branches}, split input {split}]: {error}"
            ) from None
        init_weights(sk)
        sk.to(device=conv.weight.device, dtype=conv.weight.dtype)
        copied = copy_weights and sk.branches[0].conv.weight.shape == conv.weight.shape
        if copied:
            _copy_into_first_branch(sk, conv, bn)
        sk.train(conv.training)
        setattr(parent, conv_name, sk)
        if bn_name is not None:
            setattr(parent, bn_name, nn.Identity())
        replaced.append(
            Replacement(
                prefix + conv_name, None if bn_name is None else prefix + bn_name,
                conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                conv.dilation[0], conv.groups, branches, split, copied, layer.dims,
            )
        )
    if not replaced:
        raise UserError(
            f"convert_to_sk: no eligible convolution in {type(model).__name__}"
            f"{' (after the include filter)' if include is not None else ''}; SK replaces a k x k "
            "nn.Conv1d/2d/3d (k odd > 1, one stride and dilation, 'same' padding) other than an "
            "ungrouped first one (the stem, reading the input)"
        )
    return replaced
