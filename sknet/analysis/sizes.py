"""Attention against true object size: where the validation set records each object's size
(:mod:`sknet.data.scaled`), the images as they are (1.0x), binned by that size.

Per SK unit and size bin: the mean attention difference (largest minus smallest receptive field,
the number of Figure 3, right) with its standard error; per unit, the least-squares slope of the
difference against the object's height, with its standard error and the correlation. The paper's
claim (Figures 3-4) is a rise with size in the low and middle units and none in the top one.
All from running sums, so memory does not grow with the dataset. :class:`SizeStatistics` takes
any per-image number by series (a unit's difference here; an LSK unit's share on the object or
around it in :mod:`sknet.analysis.spatial`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sknet.analysis.statistics import Moments, large_minus_small, number
from sknet.errors import UserError

MAX_EXACT_BINS = 12
"""Up to this many distinct sizes, each is its own bin; beyond, equal-width bins."""
BINS = 6


def size_bins(
    heights: torch.Tensor, grid: list[int] | None = None
) -> list[tuple[float, float]]:
    """``(low, high)`` bins covering ``heights``: around each height of ``grid`` (the heights
    the data was drawn at; the edges halfway between them, so that a digit measured a pixel off
    stays in its bin), else one per distinct height if they are few, else :data:`BINS`
    equal-width ones."""
    if grid:
        edges = [(low + high) / 2 for low, high in itertools.pairwise(grid)]
        lows = [float(min(grid[0], heights.min().item())), *edges]
        highs = [*edges, float(max(grid[-1], heights.max().item()))]
        return list(zip(lows, highs, strict=True))
    distinct = sorted({float(height) for height in heights.tolist()})
    if len(distinct) <= MAX_EXACT_BINS:
        return [(height, height) for height in distinct]
    low, high = distinct[0], distinct[-1]
    width = (high - low) / BINS
    return [(low + index * width, low + (index + 1) * width) for index in range(BINS)]


def bin_of(heights: torch.Tensor, bins: list[tuple[float, float]]) -> torch.Tensor:
    """The bin index of each height: the last bin that starts at or below it (heights below the
    first bin go to the first)."""
    starts = torch.tensor([low for low, _ in bins], dtype=torch.float64)
    return ((heights.double()[:, None] >= starts[None]).sum(1) - 1).clamp(min=0)


def differences(
    attention: Mapping[str, torch.Tensor], units: Mapping[str, tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """Per unit, each image's attention difference ``[B]`` from its weights ``[B, M, C]``;
    ``units`` gives each unit's ``(large, small)`` branches."""
    return {
        name: large_minus_small(attention[name].double().cpu(), large, small)
        for name, (large, small) in units.items()
    }


class SizeStatistics:
    """Running sums of per-image numbers (e.g. each unit's attention difference) by object size.

    Args:
        units: the names of the series (e.g. the units).
        bins: the size bins (:func:`size_bins`).
        heights: the heights of the images to come, in order (for :meth:`add_next`).
    """

    def __init__(
        self, units: Sequence[str], bins: list[tuple[float, float]],
        heights: torch.Tensor | None = None,
    ) -> None:
        self.units = list(units)
        self.bins = bins
        self.heights, self.seen = heights, 0
        self.images = torch.zeros(len(bins), dtype=torch.float64)
        self.by_bin = {name: Moments.zeros(len(bins)) for name in units}
        # sums of x (height), y (the number), xy, x^2, y^2 for the fitted line
        self.sums = {name: torch.zeros(5, dtype=torch.float64) for name in units}
        self.count = 0

    def add_next(self, values: Mapping[str, torch.Tensor], skipped: int = 0) -> None:
        """The next images of the stream: ``values[series]`` ``[B]``, the heights they were
        given at construction. Data of recorded sizes is in memory: nothing can be skipped."""
        if skipped:
            raise UserError("object sizes are recorded only for in-memory data; none skipped")
        count = len(next(iter(values.values())))
        self.add(values, self.heights[self.seen : self.seen + count])
        self.seen += count

    def add(self, values: Mapping[str, torch.Tensor], heights: torch.Tensor) -> None:
        """One batch: ``values[series]`` ``[B]`` (float64), ``heights`` ``[B]``."""
        heights = heights.double().cpu()
        index = bin_of(heights, self.bins)
        self.count += len(heights)
        self.images.index_add_(0, index, torch.ones(len(heights), dtype=torch.float64))
        for name in self.units:
            value = values[name].double().cpu()
            self.by_bin[name].add_at(0, index, value)
            self.sums[name] += torch.stack([
                heights.sum(), value.sum(), (heights * value).sum(),
                heights.square().sum(), value.square().sum(),
            ])

    def report(self) -> dict[str, Any]:
        """The numbers of ``sizes.csv`` and the size figure (JSON-able)."""
        units = {}
        for name in self.units:
            mean, std = self.by_bin[name].mean_std(self.images)
            sem = torch.where(self.images > 0, std / self.images.clamp(min=1).sqrt(), 0.0)
            units[name] = {
                "mean": _floats(mean), "std": _floats(std), "sem": _floats(sem),
                **self._fit(name),
            }
        return {
            "bins": [[low, high] for low, high in self.bins],
            "images": [int(count) for count in self.images.tolist()],
            "units": units,
        }

    def _fit(self, name: str) -> dict[str, float | None]:
        """Least-squares slope (the number per pixel of height) with its standard error, and
        the Pearson correlation, from the running sums."""
        n = self.count
        if n < 3:
            return {"slope": None, "slope_se": None, "correlation": None}
        sx, sy, sxy, sxx, syy = self.sums[name].tolist()
        sxx_c, syy_c, sxy_c = sxx - sx * sx / n, syy - sy * sy / n, sxy - sx * sy / n
        if sxx_c <= 0:
            return {"slope": None, "slope_se": None, "correlation": None}
        slope = sxy_c / sxx_c
        residual = max(syy_c - slope * sxy_c, 0.0) / (n - 2)
        correlation = sxy_c / math.sqrt(sxx_c * syy_c) if syy_c > 0 else 0.0
        return {
            "slope": number(slope), "slope_se": number(math.sqrt(residual / sxx_c)),
            "correlation": number(correlation),
        }


def _floats(values: torch.Tensor) -> list[float]:
    return [number(value) for value in values.tolist()]


SIZE_COLUMNS = ["unit", "height_low", "height_high", "images", "diff_mean", "diff_sem", "diff_std"]
"""``sizes.csv``: per unit and size bin."""


def bin_rows(
    sizes: Mapping[str, Any], series: Mapping[str, Any], prefix: str, **keys: Any
) -> list[dict[str, Any]]:
    """One CSV row per size bin of one series (``{"mean", "sem", "std"}`` per bin), its
    statistics named ``{prefix}_mean`` etc., after the columns ``keys`` (e.g. the unit)."""
    return [
        {
            **keys, "height_low": low, "height_high": high, "images": sizes["images"][position],
            **{f"{prefix}_{stat}": series[stat][position] for stat in ("mean", "sem", "std")},
        }
        for position, (low, high) in enumerate(sizes["bins"])
    ]


def size_rows(sizes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``sizes.csv``."""
    return [
        row for name, values in sizes["units"].items()
        for row in bin_rows(sizes, values, "diff", unit=name)
    ]


def bins_and_slopes(sizes: Mapping[str, Any]) -> str:
    """What the text findings by size print: the outer bins, and how slopes are given."""
    first, last = sizes["bins"][0], sizes["bins"][-1]
    return (f"smallest bin {first[0]:g} px, largest {last[1]:g} px; slope per 10 px of height "
            "± standard error (correlation)")


def fitted_slope(values: Mapping[str, Any]) -> str:
    """A series' slope per 10 px of height, its standard error and correlation (``-``: none)."""
    slope = values["slope"]
    if slope is None:
        return "-"
    return f"{10 * slope:+.4f} ± {10 * values['slope_se']:.4f} (r {values['correlation']:+.2f})"


def format_sizes(sizes: Mapping[str, Any], label: str) -> list[str]:
    """Text lines of the finding by true size: per unit, the difference from the smallest to the
    largest bin and the fitted slope per 10 pixels of height."""
    lines = [f"by true object height ({label}), 1.0x: {bins_and_slopes(sizes)}"]
    for name, values in sizes["units"].items():
        lines.append(
            f"{name:<10}{values['mean'][0]:+.4f} -> {values['mean'][-1]:+.4f}    "
            f"slope {fitted_slope(values)}"
        )
    return lines
