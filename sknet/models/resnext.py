"""The ResNeXt bottleneck with a pluggable middle convolution, and the one backbone built from it.

ResNeXt, SENet and SKNet (Table 1) differ only in the block: the middle 3x3 is a grouped conv or
an SK convolution, and SENet gates the block output. ImageNet and CIFAR layouts differ only in
the stem and the number of stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sknet.layers import DEFAULT_BRANCHES, ConvBnAct, SKConv, SqueezeExcite, parse_branches
from sknet.models.base import Backbone, conv_pool_stem, stage_level


class Bottleneck(nn.Module):
    """``1x1 -> middle (stride here) -> 1x1 [-> SE]`` plus a shortcut, then ReLU.

    The middle is :class:`~sknet.layers.ConvBnAct` for a single branch (ResNeXt's grouped 3x3)
    and :class:`~sknet.layers.SKConv` for several (an SK unit).

    Args:
        in_channels: block input channels.
        width: channels of the middle convolution.
        out_channels: block output channels.
        stride: stride of the middle convolution and of the projection shortcut.
        branches: ``(kernel, dilation, groups)`` per middle branch.
        attention: SK attention across branches (else their plain sum).
        reduction: SK r.
        min_dim: SK L.
        se_reduction: add SE with this r on the block output (``None``: no SE).
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int,
        branches: Sequence[Sequence[int]],
        attention: bool,
        reduction: int,
        min_dim: int,
        se_reduction: int | None,
    ) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(in_channels, width, 1)
        if len(branches) == 1:
            kernel, dilation, groups = branches[0]
            self.conv2: nn.Module = ConvBnAct(width, width, kernel, stride, dilation, groups)
        else:
            self.conv2 = SKConv(width, width, stride, branches, reduction, min_dim, attention)
        self.conv3 = ConvBnAct(width, out_channels, 1, act=False)
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction else None
        self.downsample = (
            ConvBnAct(in_channels, out_channels, 1, stride, act=False)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        mid = self.conv1(x)
        if isinstance(self.conv2, SKConv):
            out = self.conv2.forward_into(mid, self.conv3)
        else:
            out = self.conv3(self.conv2(mid))
        if self.se is not None:
            out = self.se(out)
        # In place: no autograd function keeps this sum's first operand (BN and the SE product
        # keep their inputs), and the next ReLU then works in the same buffer.
        return self.act(out.add_(shortcut))


class ResNeXt(Backbone):
    """ResNeXt-style network: stem, stages of :class:`Bottleneck`, global pool, fc.

    Stage ``i`` (0-based) has middle width ``cardinality * base_width * 2**i`` and output
    ``base_out * 2**i``; every stage after the first halves the resolution in its first block.

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
    ) -> None:
        super().__init__()
        branch_specs = parse_branches(branches)
        if stem == "imagenet":
            self.stem, stem_level = conv_pool_stem(in_chans, stem_channels, 7)
            stem_reduction = 4
        elif stem == "cifar":
            self.stem = ConvBnAct(in_chans, stem_channels, 3)
            stem_level = {"channels": stem_channels, "reduction": 1, "name": "stem"}
            stem_reduction = 1
        else:
            raise ValueError(f"ResNeXt: stem must be 'imagenet' or 'cifar', got {stem!r}")

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
                    Bottleneck(
                        in_channels, width, out_channels, stride, branch_specs,
                        attention, reduction, min_dim, se_reduction,
                    )
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(stage_level(index, out_channels, stem_reduction * 2**index))
        self.stages = nn.ModuleList(stages)
        self._finish(in_channels, num_classes)
