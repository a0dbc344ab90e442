"""ShuffleNetV2 (Ma et al., ECCV 2018) with a pluggable depthwise convolution: plain, +SE, +SK.

Table 4 of the SK paper puts SK convolutions in place of ShuffleNetV2's 3x3 depthwise
convolutions (Section 3.2). Here every depthwise 3x3 is built by one factory: a single branch is
the plain depthwise conv + BN (no ReLU, as in ShuffleNetV2), several branches are an
:class:`~sknet.layers.SKConv` whose branches are all depthwise. SE gates the output of each
unit's transformation branch, the counterpart of SENet's residual branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sknet.errors import UserError
from sknet.layers import ConvBnAct, SKConv, SqueezeExcite, parse_branches
from sknet.models.base import Backbone, conv_pool_stem, stage_level

DepthwiseBranch = tuple[int, int]
"""One depthwise branch: ``(kernel_size, dilation)``; its groups are always its channels."""

PLAIN_DEPTHWISE: tuple[DepthwiseBranch, ...] = ((3, 1),)
SK_DEPTHWISE: tuple[DepthwiseBranch, ...] = ((3, 1), (3, 2))
"""The SK variant of Table 4: M = 2 depthwise branches, 3x3 and 3x3 with dilation 2."""


def parse_depthwise_branches(branches: Sequence[Sequence[int]]) -> tuple[DepthwiseBranch, ...]:
    """Validate ``[(kernel, dilation), ...]`` for depthwise branches and return it as tuples."""
    return parse_branches(
        branches, ("kernel", "dilation"), "ShuffleNetV2",
        "; the groups of a depthwise branch are its channels", "depthwise branch",
    )


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups (ShuffleNet's channel shuffle)."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit: channel split (or, at stride 2, two branches), concat, shuffle.

    ``branch_main`` is ``1x1 -> depthwise (stride here) -> 1x1 [-> SE]``; at stride 2 a second
    branch ``depthwise (stride 2) -> 1x1`` replaces the identity half. Registration order puts
    ``branch_main`` first, so :meth:`~sknet.models.Backbone.sk_units` names its SK convolution
    ``SK_{stage}_{block}`` and the projection branch's ``SK_{stage}_{block}b``.

    Args:
        in_channels: unit input channels.
        out_channels: unit output channels (each branch produces half).
        stride: 1 (split the input in halves) or 2 (down-sampling unit).
        branches: ``(kernel, dilation)`` per depthwise branch; one is a plain depthwise conv.
        attention: SK attention across branches (else their plain sum).
        reduction: SK r.
        min_dim: SK L.
        se_reduction: SE with this r on ``branch_main``'s output (``None``: no SE).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        branches: Sequence[DepthwiseBranch],
        attention: bool,
        reduction: int,
        min_dim: int,
        se_reduction: int | None,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise UserError(f"ShuffleUnit: stride must be 1 or 2, got {stride}")
        if out_channels % 2 or (stride == 1 and in_channels != out_channels):
            raise UserError(
                f"ShuffleUnit: a stride-1 unit keeps its (even) width, got {in_channels} -> "
                f"{out_channels}"
            )
        self.stride = stride
        half = out_channels // 2
        main_in = in_channels if stride == 2 else half

        def depthwise(channels: int) -> nn.Module:
            if len(branches) == 1:
                kernel, dilation = branches[0]
                return ConvBnAct(channels, channels, kernel, stride, dilation, channels, act=False)
            specs = [(kernel, dilation, channels) for kernel, dilation in branches]
            return SKConv(channels, channels, stride, specs, reduction, min_dim, attention)

        main: list[nn.Module] = [
            ConvBnAct(main_in, half, 1),
            depthwise(half),
            ConvBnAct(half, half, 1),
        ]
        if se_reduction:
            main.append(SqueezeExcite(half, se_reduction))
        self.branch_main = nn.Sequential(*main)
        self.branch_proj = (
            nn.Sequential(depthwise(in_channels), ConvBnAct(in_channels, half, 1))
            if stride == 2
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch_proj is None:
            keep, transform = x.chunk(2, dim=1)
            out = torch.cat((keep, self.branch_main(transform)), dim=1)
        else:
            out = torch.cat((self.branch_proj(x), self.branch_main(x)), dim=1)
        return channel_shuffle(out)


class ShuffleNetV2(Backbone):
    """ShuffleNetV2: 3x3/2 conv and 3x3/2 max-pool, three stages of units, 1x1 conv5, pool, fc.

    Stages are numbered 2-4 as in ShuffleNetV2's Table 5 (conv1 and the pool are the stem); the
    first unit of each stage halves the resolution. ``conv5`` belongs to
    :meth:`forward_features`, so ``num_features`` is its width (1024).

    Args:
        channels: output channels of the three stages (48/96/192 for 0.5x, 116/232/464 for 1.0x).
        depths: units per stage ({4, 8, 4}).
        branches: ``(kernel, dilation)`` per depthwise branch: one is ShuffleNetV2's depthwise
            3x3, several are an SK convolution over depthwise branches.
        attention: SK attention (``False``: the naive sum of the branches).
        reduction: SK r (Eq. 4).
        min_dim: SK L (Eq. 4).
        se_reduction: SE r on every unit's transformation branch, or ``None``.
        stem_channels: conv1 output channels.
        head_channels: conv5 output channels.
        num_classes: classifier outputs.
        in_chans: input image channels.
    """

    def __init__(
        self,
        channels: Sequence[int] = (116, 232, 464),
        depths: Sequence[int] = (4, 8, 4),
        branches: Sequence[Sequence[int]] = PLAIN_DEPTHWISE,
        attention: bool = True,
        reduction: int = 4,
        min_dim: int = 32,
        se_reduction: int | None = None,
        stem_channels: int = 24,
        head_channels: int = 1024,
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        branch_specs = parse_depthwise_branches(branches)
        if len(channels) != len(depths):
            raise UserError(
                f"ShuffleNetV2: {len(channels)} stage widths for {len(depths)} stage depths"
            )
        self.stem, stem_level = conv_pool_stem(in_chans, stem_channels, 3)
        stages = []
        self.feature_info = [stem_level]
        in_channels = stem_channels
        for index, (out_channels, depth) in enumerate(zip(channels, depths, strict=True)):
            units = []
            for unit_index in range(depth):
                units.append(
                    ShuffleUnit(
                        in_channels, out_channels, 2 if unit_index == 0 else 1, branch_specs,
                        attention, reduction, min_dim, se_reduction,
                    )
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*units))
            self.feature_info.append(stage_level(index, out_channels, 8 * 2**index))
        self.stages = nn.ModuleList(stages)
        self.conv5 = ConvBnAct(in_channels, head_channels, 1)
        self._finish(head_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and conv5: the unpooled feature map [N, head_channels, H/32, W/32]."""
        return self.conv5(super().forward_features(x))
