"""The ResNet family's blocks with a pluggable convolution, and the one backbone built from them.

ResNeXt, SENet and SKNet (Table 1) differ only in the block: the middle 3x3 of the bottleneck is a
grouped conv or an SK convolution, and SENet gates the block output. The basic block (two 3x3
convolutions, ResNet-18/34) takes an SK convolution as its first 3x3: timm's SK-ResNet-18/34.
ImageNet and CIFAR layouts differ only in the stem and the number of stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sknet.errors import UserError
from sknet.layers import DEFAULT_BRANCHES, ConvBnAct, SKConv, SqueezeExcite, parse_branches
from sknet.models.base import Backbone, conv_pool_stem, stage_level

BLOCKS = ("bottleneck", "basic")
"""The block types of :class:`ResNeXt`."""


@dataclass(frozen=True)
class BlockOptions:
    """How a block's pluggable convolution and its output are built.

    Attributes:
        branches: ``(kernel, dilation, groups)`` per branch; one is a plain (grouped) conv,
            several an SK unit.
        attention: SK attention across branches (else their plain sum).
        reduction: SK r (Eq. 4).
        min_dim: SK L (Eq. 4).
        se_reduction: SE with this r on the block output (``None``: no SE).
        split_input: SK branches read their share of the input channels.
    """

    branches: Sequence[Sequence[int]] = DEFAULT_BRANCHES
    attention: bool = True
    reduction: int = 16
    min_dim: int = 32
    se_reduction: int | None = None
    split_input: bool = False


def selective_conv(
    in_channels: int, out_channels: int, stride: int, options: BlockOptions
) -> nn.Module:
    """The pluggable convolution: :class:`~sknet.layers.ConvBnAct` for a single branch (a plain
    or grouped conv), :class:`~sknet.layers.SKConv` for several (an SK unit)."""
    if len(options.branches) == 1:
        kernel, dilation, groups = options.branches[0]
        return ConvBnAct(in_channels, out_channels, kernel, stride, dilation, groups)
    return SKConv(
        in_channels, out_channels, stride, options.branches, options.reduction, options.min_dim,
        options.attention, options.split_input,
    )


class _Residual(nn.Module):
    """What the blocks share: SE on the block output, the shortcut, the final ReLU."""

    def _add_shortcut(
        self, in_channels: int, out_channels: int, stride: int, se_reduction: int | None
    ) -> None:
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction else None
        self.downsample = (
            ConvBnAct(in_channels, out_channels, 1, stride, act=False)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.act = nn.ReLU(inplace=True)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self._convolutions(x)
        if self.se is not None:
            out = self.se(out)
        # In place: no autograd function keeps this sum's first operand (BN and the SE product
        # keep their inputs), and the next ReLU then works in the same buffer.
        return self.act(out.add_(shortcut))


class Bottleneck(_Residual):
    """``1x1 -> middle (stride here) -> 1x1 [-> SE]`` plus a shortcut, then ReLU.

    The middle is :func:`selective_conv`: ResNeXt's grouped 3x3, or an SK unit.

    Args:
        in_channels: block input channels.
        width: channels of the middle convolution.
        out_channels: block output channels.
        stride: stride of the middle convolution and of the projection shortcut.
        options: the middle convolution's branches and SK settings, and SE.
    """

    def __init__(
        self, in_channels: int, width: int, out_channels: int, stride: int,
        options: BlockOptions,
    ) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(in_channels, width, 1)
        self.conv2 = selective_conv(width, width, stride, options)
        self.conv3 = ConvBnAct(width, out_channels, 1, act=False)
        self._add_shortcut(in_channels, out_channels, stride, options.se_reduction)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class BasicBlock(_Residual):
    """``3x3 (stride here) -> 3x3 [-> SE]`` plus a shortcut, then ReLU (ResNet-18/34).

    The first 3x3 is :func:`selective_conv`: a plain 3x3, or an SK unit (SK-ResNet, whose
    branches in timm split the input channels between them).

    Args:
        in_channels: block input channels.
        out_channels: channels of both convolutions and of the block output.
        stride: stride of the first convolution and of the projection shortcut.
        options: the first convolution's branches and SK settings, and SE.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, options: BlockOptions
    ) -> None:
        super().__init__()
        self.conv1 = selective_conv(in_channels, out_channels, stride, options)
        self.conv2 = ConvBnAct(out_channels, out_channels, 3, act=False)
        self._add_shortcut(in_channels, out_channels, stride, options.se_reduction)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ResNeXt(Backbone):
    """ResNet-family network: stem, stages of :class:`Bottleneck` or :class:`BasicBlock`, global
    pool, fc. With bottlenecks it is ResNeXt, SENet or SKNet (Table 1); with basic blocks
    ResNet-18/34 or timm's SK-ResNet-18/34.

    Stage ``i`` (0-based) has output ``base_out * 2**i`` and, in a bottleneck, middle width
    ``cardinality * base_width * 2**i``; every stage after the first halves the resolution in its
    first block.

    Args:
        depths: blocks per stage ({3,4,6,3} for the 50-layer models, Table 1).
        cardinality: groups of the ResNeXt template (32 in "32x4d").
        base_width: channels per group in the first stage (4 in "32x4d").
        branches: middle-convolution branches; one branch is ResNeXt, several are SK.
        attention: SK attention (``False``: the naive sum of Table 7).
        reduction: SK r (Eq. 4).
        min_dim: SK L (Eq. 4).
        se_reduction: SE r on every block output (SENet), or ``None``.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool) or ``"cifar"`` (one 3x3 conv).
        stem_channels: stem output channels.
        base_out: output channels of the first stage.
        num_classes: classifier outputs.
        in_chans: input image channels.
        block: ``"bottleneck"`` (1x1, middle, 1x1) or ``"basic"`` (two 3x3: the first one is the
            pluggable convolution; ``cardinality`` and ``base_width`` do not apply).
        split_input: SK branches read their share of the input channels (timm's SK-ResNet).
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 6, 3),
        cardinality: int = 32,
        base_width: int = 4,
        branches: Sequence[Sequence[int]] = DEFAULT_BRANCHES,
        attention: bool = True,
        reduction: int = 16,
        min_dim: int = 32,
        se_reduction: int | None = None,
        stem: str = "imagenet",
        stem_channels: int = 64,
        base_out: int = 256,
        num_classes: int = 1000,
        in_chans: int = 3,
        block: str = "bottleneck",
        split_input: bool = False,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise UserError(f"ResNeXt: block must be one of {', '.join(BLOCKS)}, got {block!r}")
        branch_specs = parse_branches(branches)
        options = BlockOptions(
            branch_specs, attention, reduction, min_dim, se_reduction, split_input
        )
        if stem == "imagenet":
            self.stem, stem_level = conv_pool_stem(in_chans, stem_channels, 7)
            stem_reduction = 4
        elif stem == "cifar":
            self.stem = ConvBnAct(in_chans, stem_channels, 3)
            stem_level = {"channels": stem_channels, "reduction": 1, "name": "stem"}
            stem_reduction = 1
        else:
            raise UserError(f"ResNeXt: stem must be 'imagenet' or 'cifar', got {stem!r}")

        stages = []
        self.feature_info = [stem_level]
        in_channels = stem_channels
        for index, depth in enumerate(depths):
            width = cardinality * base_width * 2**index
            out_channels = base_out * 2**index
            blocks = []
            for block_index in range(depth):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(
                    Bottleneck(in_channels, width, out_channels, stride, options)
                    if block == "bottleneck"
                    else BasicBlock(in_channels, out_channels, stride, options)
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(stage_level(index, out_channels, stem_reduction * 2**index))
        self.stages = nn.ModuleList(stages)
        self._finish(in_channels, num_classes)
