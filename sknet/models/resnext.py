"""The ResNet family's blocks with a pluggable convolution, and the one backbone built from them.

ResNeXt, SENet and SKNet (Table 1) differ only in the block: the middle 3x3 of the bottleneck is a
grouped conv or an SK convolution, and SENet gates the block output. The basic block (two 3x3
convolutions, ResNet-18/34) takes an SK convolution as its first 3x3: timm's SK-ResNet-18/34.
ImageNet and CIFAR layouts differ only in the stem and the number of stages.

ResNeSt (Zhang et al., "ResNeSt: Split-Attention Networks") is the same backbone with four
options: a split-attention convolution as the middle conv (``radix``), the deep stem (three 3x3
convolutions), the average-pooled projection shortcut (``avg_down``, ResNet-D) and an average pool
that takes over the stride of the middle conv in strided blocks (``avd``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sknet.errors import UserError
from sknet.layers import (
    DEFAULT_BRANCHES,
    ConvBnAct,
    SKConv,
    SplitAttentionConv,
    SqueezeExcite,
    parse_branches,
)
from sknet.models.base import Backbone, conv_pool_stem, stage_level

BLOCKS = ("bottleneck", "basic")
"""The block types of :class:`ResNeXt`."""
STEMS = ("imagenet", "deep", "cifar")
"""The stems of :class:`ResNeXt`."""
AVD_POSITIONS = ("before", "after")
"""Where ``avd``'s average pool sits around the middle convolution of a strided bottleneck."""


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
        radix: a split-attention convolution with this radix in place of the single branch
            (whose groups are its cardinality); ``None``: the branches decide.
        avd: in a strided bottleneck, a 3x3 average pool with the stride ``"before"`` or
            ``"after"`` the middle convolution, which then has stride 1; ``None``: none.
    """

    branches: Sequence[Sequence[int]] = DEFAULT_BRANCHES
    attention: bool = True
    reduction: int = 16
    min_dim: int = 32
    se_reduction: int | None = None
    split_input: bool = False
    radix: int | None = None
    avd: str | None = None


def selective_conv(
    in_channels: int, out_channels: int, stride: int, options: BlockOptions
) -> nn.Module:
    """The pluggable convolution: :class:`~sknet.layers.ConvBnAct` for a single branch (a plain
    or grouped conv), :class:`~sknet.layers.SKConv` for several (an SK unit), and with a
    ``radix`` :class:`~sknet.layers.SplitAttentionConv` of the single branch's kernel, dilation
    and groups (its cardinality)."""
    if options.radix is not None:
        kernel, dilation, groups = options.branches[0]
        return SplitAttentionConv(
            in_channels, out_channels, kernel, stride, dilation, options.radix, groups,
            options.reduction, options.min_dim,
        )
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
        self, in_channels: int, out_channels: int, stride: int, se_reduction: int | None,
        avg_down: bool = False,
    ) -> None:
        """SE, the shortcut and the ReLU. The shortcut is the identity where the shapes agree,
        else a projection: a strided 1x1 conv + BN, or with ``avg_down`` (ResNet-D) a 2x2 average
        pool with the stride (ceil mode, padding not counted) then a 1x1 conv + BN."""
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction else None
        projected = stride != 1 or in_channels != out_channels
        pooled = projected and avg_down and stride > 1
        self.shortcut_pool = (
            nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if pooled else None
        )
        self.downsample = (
            ConvBnAct(in_channels, out_channels, 1, 1 if pooled else stride, act=False)
            if projected
            else None
        )
        self.act = nn.ReLU(inplace=True)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut_pool is None else self.shortcut_pool(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        out = self._convolutions(x)
        if self.se is not None:
            out = self.se(out)
        # In place: no autograd function keeps this sum's first operand (BN and the SE product
        # keep their inputs), and the next ReLU then works in the same buffer.
        return self.act(out.add_(shortcut))


class Bottleneck(_Residual):
    """``1x1 -> middle (stride here) -> 1x1 [-> SE]`` plus a shortcut, then ReLU.

    The middle is :func:`selective_conv`: ResNeXt's grouped 3x3, an SK unit or a split-attention
    unit. With ``options.avd`` a strided block gives the stride to a 3x3 average pool (padding 1,
    counted) before or after the middle conv, which then runs at stride 1 (ResNeSt).

    Args:
        in_channels: block input channels.
        width: channels of the middle convolution.
        out_channels: block output channels.
        stride: stride of the middle convolution and of the projection shortcut.
        options: the middle convolution's branches and SK settings, and SE.
        avg_down: an average-pooled projection shortcut (see ``_add_shortcut``).
    """

    def __init__(
        self, in_channels: int, width: int, out_channels: int, stride: int,
        options: BlockOptions, avg_down: bool = False,
    ) -> None:
        super().__init__()
        pool = nn.AvgPool2d(3, stride, padding=1) if options.avd and stride > 1 else None
        self.conv1 = ConvBnAct(in_channels, width, 1)
        self.pool_before = pool if options.avd == "before" else None
        self.conv2 = selective_conv(width, width, 1 if pool else stride, options)
        self.pool_after = pool if options.avd == "after" else None
        self.conv3 = ConvBnAct(width, out_channels, 1, act=False)
        self._add_shortcut(in_channels, out_channels, stride, options.se_reduction, avg_down)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.pool_before is not None:
            out = self.pool_before(out)
        out = self.conv2(out)
        if self.pool_after is not None:
            out = self.pool_after(out)
        return self.conv3(out)


class BasicBlock(_Residual):
    """``3x3 (stride here) -> 3x3 [-> SE]`` plus a shortcut, then ReLU (ResNet-18/34).

    The first 3x3 is :func:`selective_conv`: a plain 3x3, or an SK unit (SK-ResNet, whose
    branches in timm split the input channels between them).

    Args:
        in_channels: block input channels.
        out_channels: channels of both convolutions and of the block output.
        stride: stride of the first convolution and of the projection shortcut.
        options: the first convolution's branches and SK settings, and SE.
        avg_down: an average-pooled projection shortcut (see ``_add_shortcut``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, options: BlockOptions,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = selective_conv(in_channels, out_channels, stride, options)
        self.conv2 = ConvBnAct(out_channels, out_channels, 3, act=False)
        self._add_shortcut(in_channels, out_channels, stride, options.se_reduction, avg_down)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ResNeXt(Backbone):
    """ResNet-family network: stem, stages of :class:`Bottleneck` or :class:`BasicBlock`, global
    pool, fc. With bottlenecks it is ResNeXt, SENet or SKNet (Table 1), or with ``radix``, the deep
    stem, ``avg_down`` and ``avd`` ResNeSt; with basic blocks ResNet-18/34 or timm's
    SK-ResNet-18/34.

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
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool), ``"deep"`` (3x3/2, 3x3 and 3x3
            conv + BN + ReLU of ``stem_channels / 2``, ``stem_channels / 2`` and
            ``stem_channels`` outputs, then the 3x3/2 max-pool: ResNet-D's, ResNeSt's) or
            ``"cifar"`` (one 3x3 conv).
        stem_channels: stem output channels.
        base_out: output channels of the first stage.
        num_classes: classifier outputs.
        in_chans: input image channels.
        block: ``"bottleneck"`` (1x1, middle, 1x1) or ``"basic"`` (two 3x3: the first one is the
            pluggable convolution; ``cardinality`` and ``base_width`` do not apply).
        split_input: SK branches read their share of the input channels (timm's SK-ResNet).
        radix: the middle conv is a split-attention convolution with this radix, of the single
            branch's kernel, dilation and groups (its cardinality); ``reduction`` and ``min_dim``
            set its attention width (ResNeSt's values are :mod:`~sknet.layers.split_attention`'s
            defaults). ``None``: the branches decide.
        avg_down: projection shortcuts average-pool with their stride before their 1x1 conv.
        avd: ``"before"`` or ``"after"``: strided bottlenecks average-pool around a middle conv
            of stride 1 (ResNeSt's ``avd_first`` or not); ``None``: the middle conv strides.
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
        radix: int | None = None,
        avg_down: bool = False,
        avd: str | None = None,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise UserError(f"ResNeXt: block must be one of {', '.join(BLOCKS)}, got {block!r}")
        if stem not in STEMS:
            raise UserError(f"ResNeXt: stem must be one of {', '.join(STEMS)}, got {stem!r}")
        if avd is not None and avd not in AVD_POSITIONS:
            raise UserError(
                f"ResNeXt: avd must be None or one of {', '.join(AVD_POSITIONS)}, got {avd!r}"
            )
        branch_specs = parse_branches(branches)
        if radix is not None and len(branch_specs) != 1:
            raise UserError(
                f"ResNeXt: radix {radix} splits one convolution; give a single branch "
                f"(kernel, dilation, cardinality), got {len(branch_specs)}"
            )
        if radix is not None and (not attention or split_input):
            raise UserError(
                f"ResNeXt: radix {radix} makes the middle conv a split-attention unit, which "
                "always selects and always splits its input; drop attention=False/split_input=True"
            )
        if block == "basic" and (radix is not None or avd is not None):
            raise UserError(
                "ResNeXt: radix and avd shape the bottleneck's middle conv; the basic block has "
                "none, so use block='bottleneck' or drop them"
            )
        options = BlockOptions(
            branch_specs, attention, reduction, min_dim, se_reduction, split_input, radix, avd
        )
        self.stem_type = stem
        self.avg_down = avg_down
        self.stem, stem_level = _stem(stem, in_chans, stem_channels)
        stem_reduction = 1 if stem == "cifar" else 4

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
                    Bottleneck(in_channels, width, out_channels, stride, options, avg_down)
                    if block == "bottleneck"
                    else BasicBlock(in_channels, out_channels, stride, options, avg_down)
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(stage_level(index, out_channels, stem_reduction * 2**index))
        self.stages = nn.ModuleList(stages)
        self._finish(in_channels, num_classes)


def _stem(
    stem: str, in_chans: int, channels: int
) -> tuple[nn.Module, dict[str, int | str]]:
    """The stem of :class:`ResNeXt` and its feature level (see ``stem`` there)."""
    if stem == "imagenet":
        return conv_pool_stem(in_chans, channels, 7)
    if stem == "cifar":
        return ConvBnAct(in_chans, channels, 3), {
            "channels": channels, "reduction": 1, "name": "stem"
        }
    if channels % 2:
        raise UserError(f"ResNeXt: the deep stem needs even stem_channels, got {channels}")
    deep = nn.Sequential(
        ConvBnAct(in_chans, channels // 2, 3, stride=2),
        ConvBnAct(channels // 2, channels // 2, 3),
        ConvBnAct(channels // 2, channels, 3),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    return deep, {"channels": channels, "reduction": 2, "name": "stem.2"}
