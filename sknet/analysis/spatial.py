"""LSK units against true object size: where the selection falls, on the object or around it.

An LSK unit (:class:`~sknet.layers.LSKUnit`) selects per position: its weights are ``[N, M, H, W]``,
an independent sigmoid per branch. Per position the number is the **share** of the branch of
largest receptive field, ``a_large / (a_small + a_large)`` (LSKNet: the 7x7 dilation-3 step, RF 23,
against the 5x5): 1/2 for no preference, above for the larger kernel. Each canvas pixel takes the
share of the map cell whose centre is nearest (:func:`on_canvas`), and per image and unit the share
is averaged over two **regions**: the **object**, the pixels of the digit's bounding box
(:func:`sknet.data.scaled.box_masks`, from the boxes the data records), and the **background**,
every other pixel; and their paired **difference**, object minus background. Each is binned by the
object's measured height with a least-squares slope against it
(:class:`~sknet.analysis.sizes.SizeStatistics`), at 1.0x: the images as they are, since the
object's place is known only there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sknet.analysis.header import report_header, unit_header
from sknet.analysis.sizes import SizeStatistics, bin_rows, bins_and_slopes, fitted_slope
from sknet.analysis.statistics import number
from sknet.data.scaled import box_masks
from sknet.data.source import Source
from sknet.errors import UserError
from sknet.trained import Trained

FORMAT = "sknet-spatial-attention-analysis"
REGIONS = ("object", "background", "difference")
"""The regions of a unit's map (``difference``: object minus background, per image)."""
REGION_COLUMNS = ["unit", "region", "height_low", "height_high", "images", "share_mean",
                  "share_sem", "share_std"]
"""``regions.csv``: per unit, region and size bin."""


def large_share(weights: torch.Tensor, large: int, small: int) -> torch.Tensor:
    """``[N, M, H, W]`` weights -> ``[N, H, W]``: ``a_large / (a_small + a_large)`` (float64)."""
    weights = weights.double()
    return weights[:, large] / (weights[:, small] + weights[:, large])


def nearest_cells(side: int, cells: int) -> torch.Tensor:
    """For each of ``side`` canvas pixels along an axis, the map cell whose centre is nearest
    (ties to the later cell): cell i of ``cells`` is centred on pixel ``i * side / cells``,
    where "same"-padded convolutions of that total stride centre their output i."""
    stride = side / cells
    position = torch.arange(side, dtype=torch.float64) / stride + 0.5
    return position.floor().long().clamp(max=cells - 1)


def on_canvas(share: torch.Tensor, side: int) -> torch.Tensor:
    """``[N, H, W]`` map -> ``[N, side, side]``: each canvas pixel takes its nearest cell's
    value."""
    rows, columns = share.shape[1:]
    return share[:, nearest_cells(side, rows)][:, :, nearest_cells(side, columns)]


def region_shares(canvas: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image ``[N]``: the share (on the canvas, :func:`on_canvas`) averaged over the object's
    pixels (``mask``), over the background's and their difference."""
    inside = (canvas * mask).sum((1, 2)) / mask.sum((1, 2))
    outside = (canvas * ~mask).sum((1, 2)) / (~mask).sum((1, 2))
    return {"object": inside, "background": outside, "difference": inside - outside}


class SpatialStatistics:
    """Running sums of each LSK unit's share on the object and on the background, by size.

    Args:
        units: per unit name, ``(large, small)`` (:func:`~sknet.analysis.kinds.contrast`).
        bins: the size bins (:func:`~sknet.analysis.sizes.size_bins`).
        heights: the objects' heights, in the order the images will come.
        boxes: their ``(top, bottom, left, right)`` boxes on the canvas, in the same order.
        side: the canvas side (pixels).
    """

    def __init__(
        self, units: Mapping[str, tuple[int, int]], bins: list[tuple[float, float]],
        heights: torch.Tensor, boxes: torch.Tensor, side: int,
    ) -> None:
        self.units = dict(units)
        self.boxes, self.side, self.seen = boxes, side, 0
        self.regions = {region: SizeStatistics(list(units), bins, heights) for region in REGIONS}
        self.map_sizes: dict[str, list[int]] = {}

    def add_next(self, attention: Mapping[str, torch.Tensor], skipped: int = 0) -> None:
        """The next images of the stream: ``attention[unit]`` ``[B, M, H, W]`` at 1.0x."""
        count = len(next(iter(attention.values())))
        boxes = self.boxes[self.seen : self.seen + count]
        shares = self.shares(attention, boxes)
        for region, statistics in self.regions.items():
            statistics.add_next({name: shares[name][region] for name in self.units}, skipped)
        self.seen += count

    def shares(
        self, attention: Mapping[str, torch.Tensor], boxes: torch.Tensor
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Per unit, each image's share per region (and, under ``"map"``, the share maps)."""
        mask = box_masks(boxes, self.side)
        result = {}
        for name, (large, small) in self.units.items():
            share = large_share(attention[name].cpu(), large, small)
            self.map_sizes[name] = list(share.shape[1:])
            result[name] = {**region_shares(on_canvas(share, self.side), mask), "map": share}
        return result

    def report(self) -> dict[str, Any]:
        """The ``sizes`` of the report: bins, images per bin and, per unit and region, the mean,
        std and standard error per bin, the overall mean and the fitted slope."""
        reports = {region: item.report() for region, item in self.regions.items()}
        first = reports[REGIONS[0]]
        units = {}
        for name in self.units:
            units[name] = {}
            for region, item in self.regions.items():
                overall = item.by_bin[name].total.sum().item() / max(item.count, 1)
                units[name][region] = {**reports[region]["units"][name], "overall": number(overall)}
        return {"bins": first["bins"], "images": first["images"], "units": units}


def check_boxes(
    source: Source, data: str, scales: Sequence[float] | None, options: Mapping[str, object]
) -> None:
    """The analysis of LSK units needs objects of known place, and has no use for the options of
    the channel analysis (Section 4.4's enlarged crops, per-channel and per-class panels)."""
    if source.val_boxes is None:
        raise UserError(
            f"--data {data}: LSK units select per position, and their analysis compares the "
            "attention on the object with the background around it, so it needs data that "
            "records where each object is: --data scaled-mnist or scaled-digits"
        )
    if scales is not None and [float(scale) for scale in scales] != [1.0]:
        raise UserError(
            "--scales: LSK units are analysed on the images as they are (1.0x), where the "
            "object's box is known; leave --scales out"
        )
    for flag, value in options.items():
        if value is not None:
            raise UserError(
                f"{flag}: a per-channel or per-class option, and LSK units select per position "
                "(their weights have no channels); leave it out"
            )


def sample_report(
    statistics: SpatialStatistics, attention: Mapping[str, torch.Tensor], boxes: torch.Tensor,
    samples: Sequence[int], labels: Sequence[int], class_names: Sequence[str],
) -> list[dict[str, Any]]:
    """The two sample images: box, class, and per unit the share map and its region means."""
    shares = statistics.shares(attention, boxes)
    reports = []
    for position, (index, label) in enumerate(zip(samples, labels, strict=True)):
        top, bottom, left, right = boxes[position].tolist()
        reports.append({
            "index": index, "label": label, "class_name": class_names[label],
            "box": [top, bottom, left, right], "height": bottom - top + 1,
            "units": {
                name: {
                    **{region: number(values[region][position].item()) for region in REGIONS},
                    "map": [[number(value) for value in row]
                            for row in values["map"][position].tolist()],
                }
                for name, values in shares.items()
            },
        })
    return reports


def build_spatial_report(
    trained: Trained, units: Mapping[str, nn.Module], statistics: SpatialStatistics, size: int,
    limit: int | None, skipped: list[str], command: str | None, samples: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every number of the LSK analysis as one JSON-able dict (``analysis.json``)."""
    images = statistics.regions[REGIONS[0]].count
    return {
        **report_header(FORMAT, trained, command, size, [1.0], images, limit, skipped),
        "units": {
            name: {
                **unit_header(unit, *statistics.units[name]),
                "map_size": statistics.map_sizes[name],
            }
            for name, unit in units.items()
        },
        "regions": list(REGIONS),
        "sizes": statistics.report(),
        "samples": samples,
    }


def spatial_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``regions.csv``."""
    sizes = report["sizes"]
    return [
        row for name, regions in sizes["units"].items() for region, values in regions.items()
        for row in bin_rows(sizes, values, "share", unit=name, region=region)
    ]


def format_spatial(report: Mapping[str, Any]) -> str:
    """The findings as text: per unit and region, the share from the smallest to the largest
    height bin and the slope per 10 pixels of height."""
    sizes = report["sizes"]
    skipped = f", {len(report['skipped'])} unreadable skipped" if report["skipped"] else ""
    lines = [
        f"{report['model']} on {report['data']}: {report['images']} images at 1.0x{skipped}",
        "LSK units: share of the larger kernel a_large / (a_small + a_large) per position, "
        "averaged over the object's box and over the background (difference: object − "
        f"background), by true object height: {bins_and_slopes(sizes)}",
    ]
    for name, regions in sizes["units"].items():
        rows, columns = report["units"][name]["map_size"]
        for region, values in regions.items():
            sign = "+" if region == "difference" else ""
            lines.append(
                f"{name:<10}{f'{rows}x{columns}':<7}{region:<12}{values['mean'][0]:{sign}.4f} -> "
                f"{values['mean'][-1]:{sign}.4f}    slope {fitted_slope(values)}"
            )
    return "\n".join(lines)
