"""Bounded-memory running statistics of the attention over a stream of images.

Running sums and sums of squares (per unit, scale and class, and per channel of one chosen unit),
so memory does not grow with the dataset. Per unit and scale, the number of Figure 3 (right) is
the mean over channels of the attention on the branch of largest receptive field minus that on
the smallest (for SKNet-50: the dilated "5x5" minus the 3x3), then averaged over images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sknet.analysis.kinds import choices, contrast

CHANNEL_GROUP = 16
"""Figure 3 (left) plots averages of 16 successive channels (SK_3_4's 256 give 16 points)."""


def number(value: float) -> float:
    """Eight significant digits: readable files, identical across identical runs."""
    return float(f"{value:.8g}")


def default_channel_group(channels: int) -> int:
    """Default channels per point of Figure 3 (left): the paper's 16, fewer for narrow units so
    that the panel keeps at least 16 points (4 for a 64-channel unit)."""
    return max(1, min(CHANNEL_GROUP, channels // 16))


@dataclass
class Moments:
    """Running count-weighted sum and sum of squares (float64) of a tensor of statistics."""

    total: torch.Tensor
    squares: torch.Tensor

    @classmethod
    def zeros(cls, *shape: int) -> Moments:
        return cls(torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64))

    def add(self, values: torch.Tensor) -> None:
        """Add per-image values ``[B, *shape]``."""
        values = values.double()
        self.total += values.sum(0)
        self.squares += values.square().sum(0)

    def add_at(self, dim: int, index: torch.Tensor, values: torch.Tensor) -> None:
        """Add ``values`` into the slots ``index`` of axis ``dim`` (e.g. one slot per class)."""
        values = values.double()
        self.total.index_add_(dim, index, values)
        self.squares.index_add_(dim, index, values.square())

    def mean_std(self, count: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and sample standard deviation over ``count`` images (0 where fewer than 2)."""
        count = torch.as_tensor(count, dtype=torch.float64)
        mean = self.total / count.clamp(min=1)
        variance = (self.squares - count * mean.square()) / (count - 1).clamp(min=1)
        std = torch.where(count > 1, variance.clamp(min=0).sqrt(), torch.zeros_like(variance))
        return mean, std


@dataclass
class UnitStatistics:
    """Per-scale sums of one unit: the large-minus-small difference and each branch's mean
    (``large``, ``small``: :func:`~sknet.analysis.kinds.contrast`)."""

    large: int
    small: int
    difference: Moments
    change: Moments
    rising: torch.Tensor
    branches: Moments
    classes: Moments

    @classmethod
    def zeros(cls, unit: nn.Module, scales: int, classes: int) -> UnitStatistics:
        branches = len(choices(unit))
        large, small = contrast(unit)
        return cls(
            large=large, small=small,
            difference=Moments.zeros(scales), change=Moments.zeros(scales),
            rising=torch.zeros(scales, dtype=torch.float64),
            branches=Moments.zeros(scales, branches), classes=Moments.zeros(scales, classes),
        )


def large_minus_small(weights: torch.Tensor, large: int, small: int) -> torch.Tensor:
    """Mean over channels of the large-RF branch's attention minus the small one's: ``[N]``."""
    return (weights[:, large] - weights[:, small]).mean(1)


def channel_groups(weights: torch.Tensor, group: int) -> torch.Tensor:
    """``[N, M, C]`` -> ``[N, M, ceil(C / group)]``: averages of ``group`` successive channels."""
    channels = weights.shape[-1]
    index = torch.arange(channels, device=weights.device) // group
    sizes = torch.bincount(index).to(weights.dtype)
    summed = weights.new_zeros(*weights.shape[:-1], len(sizes)).index_add_(-1, index, weights)
    return summed / sizes


class AttentionStatistics:
    """Bounded-memory running statistics of the attention over a stream of images.

    Memory is O(units x scales x (branches + classes) + branches x channels of ``unit``),
    whatever the number of images.

    Args:
        units: the selection units (per channel: SK, split attention), by name.
        scales: number of scales.
        classes: number of classes.
        unit: the unit whose per-channel attention is kept (Figure 3, left).
        channels: that unit's channels.
        group: channels per point of Figure 3 (left).
    """

    def __init__(
        self, units: Mapping[str, nn.Module], scales: int, classes: int, unit: str, channels: int,
        group: int,
    ) -> None:
        self.units = units
        self.unit = unit
        self.group = group
        self.images = 0
        self.class_images = torch.zeros(classes, dtype=torch.float64)
        self.per_unit = {
            name: UnitStatistics.zeros(item, scales, classes) for name, item in units.items()
        }
        branches = len(choices(units[unit]))
        self.channels = Moments.zeros(scales, branches, channels)
        self.channel_groups = Moments.zeros(scales, branches, math.ceil(channels / group))

    def add(self, attention: Sequence[Mapping[str, torch.Tensor]], targets: torch.Tensor) -> None:
        """Add one batch: ``attention[scale][unit]`` is ``[B, M, C]``; ``targets`` ``[B]``."""
        targets = targets.cpu()
        self.images += len(targets)
        self.class_images.index_add_(0, targets, torch.ones(len(targets), dtype=torch.float64))
        for name, stats in self.per_unit.items():
            per_scale = [scale[name].double().cpu() for scale in attention]
            differences = torch.stack(
                [large_minus_small(weights, stats.large, stats.small) for weights in per_scale], 1
            )
            change = differences - differences[:, :1]
            stats.difference.add(differences)
            stats.change.add(change)
            stats.rising += (change > 0).double().sum(0)
            stats.branches.add(torch.stack([weights.mean(2) for weights in per_scale], 1))
            stats.classes.add_at(1, targets, differences.T)
        chosen = torch.stack([scale[self.unit].double().cpu() for scale in attention], 1)
        self.channels.add(chosen)
        self.channel_groups.add(channel_groups(chosen, self.group))

