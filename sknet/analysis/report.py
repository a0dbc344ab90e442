"""The analysis report: every number of Figures 3 and 4 as one JSON-able dict, its text summary,
and the labels the tables and figures share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sknet.analysis.capture import stage_units
from sknet.analysis.header import report_header, unit_header
from sknet.analysis.sizes import format_sizes
from sknet.analysis.spatial import FORMAT as SPATIAL_FORMAT
from sknet.analysis.spatial import format_spatial
from sknet.analysis.statistics import (
    AttentionStatistics,
    channel_groups,
    large_minus_small,
    number,
)
from sknet.analysis.stimulus import crop_side, scale_label

FORMAT = "sknet-attention-analysis"


def numbers(values: torch.Tensor) -> Any:
    return [numbers(item) for item in values] if values.dim() else number(float(values))


def branch_label(branch: Sequence[int]) -> str:
    """``3x3`` or ``3x3 dil 2`` for a ``(kernel, dilation, groups)`` branch."""
    kernel, dilation = branch[0], branch[1]
    return f"{kernel}x{kernel}" + (f" dil {dilation}" if dilation > 1 else "")


def same_kernel(unit: dict[str, Any]) -> bool:
    """Whether a unit's two contrasted choices have one receptive field: the splits of a
    split-attention unit (SK units of equal kernels are not analysed)."""
    fields = unit["receptive_fields"]
    return fields[unit["large"]] == fields[unit["small"]]


def choice_label(unit: dict[str, Any], index: int) -> str:
    """``3x3 dil 2`` for an SK branch, ``split 2 (3x3)`` for a split."""
    label = branch_label(unit["branches"][index])
    return f"split {index + 1} ({label})" if same_kernel(unit) else label


def difference_label(report: dict[str, Any]) -> str:
    """``3x3 dil 2 - 3x3`` when every unit has the same branches, else a generic phrase."""
    labels = {
        (choice_label(unit, unit["large"]), choice_label(unit, unit["small"]))
        for unit in report["units"].values()
    }
    if len(labels) == 1:
        large, small = labels.pop()
        return f"{large} − {small}"
    return "largest − smallest receptive field"


def contrast_title(report: dict[str, Any]) -> str:
    """What the difference contrasts, for the figures' titles."""
    if all(same_kernel(unit) for unit in report["units"].values()):
        return "last minus first split (one kernel)"
    return "large minus small kernel"


def large_label(report: dict[str, Any]) -> str:
    unit = report["units"][report["unit"]]
    return choice_label(unit, unit["large"])


def sample_report(
    stats: AttentionStatistics, position: int, index: int, label: int, class_name: str,
    attention: list[dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """The numbers of Figure 3a or 3b for the image at ``position`` of the sample batch."""
    per_scale = [{name: weights[position].double() for name, weights in scale.items()}
                 for scale in attention]
    differences = {
        name: numbers(torch.stack([
            large_minus_small(scale[name][None], item.large, item.small)[0] for scale in per_scale
        ]))
        for name, item in stats.per_unit.items()
    }
    branch_means = {
        name: numbers(torch.stack([scale[name].mean(1) for scale in per_scale]))
        for name in stats.per_unit
    }
    channels = torch.stack([scale[stats.unit] for scale in per_scale])
    return {
        "figure": "3" + "ab"[position], "index": index, "label": label,
        "class_name": class_name, "diff": differences, "branch_mean": branch_means,
        "channels": numbers(channels),
        "channel_groups": numbers(channel_groups(channels, stats.group)),
    }


def build_report(
    trained, stats: AttentionStatistics, scales: list[float], size: int,
    class_units: list[str], samples: list[int], sample_labels: list[int],
    sample_attention: list[dict[str, torch.Tensor]], skipped: list[str], limit: int | None,
    command: str | None, sizes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    units = stats.units
    class_names = trained.source.class_names
    count = stats.images
    summary = []
    for name, unit_stats in stats.per_unit.items():
        difference = unit_stats.difference.mean_std(count)
        change = unit_stats.change.mean_std(count)
        branches = unit_stats.branches.mean_std(count)
        for index, scale in enumerate(scales):
            summary.append({
                "unit": name, "scale": scale, "images": count,
                "diff_mean": number(difference[0][index]),
                "diff_std": number(difference[1][index]),
                "change_mean": number(change[0][index]),
                "change_std": number(change[1][index]),
                "rising": number(unit_stats.rising[index] / count),
                "branch_mean": numbers(branches[0][index]),
                "branch_std": numbers(branches[1][index]),
            })
    channel_mean, channel_std = stats.channels.mean_std(count)
    group_mean, group_std = stats.channel_groups.mean_std(count)
    classes = {}
    absent = stats.class_images == 0  # no image of the class analysed (e.g. with a limit)
    for name in stats.per_unit:
        mean, std = stats.per_unit[name].classes.mean_std(stats.class_images)
        classes[name] = {
            key: [[None if absent[index] else value for index, value in enumerate(row)]
                  for row in numbers(values)]
            for key, values in (("mean", mean), ("std", std))
        }
    sample_reports = [
        sample_report(stats, position, index, label, class_names[label], sample_attention)
        for position, (index, label) in enumerate(zip(samples, sample_labels, strict=True))
    ]
    return {
        **report_header(FORMAT, trained, command, size, scales, count, limit, skipped),
        "crops": [crop_side(size, scale) for scale in scales],
        "units": {
            name: {
                "channels": int(sample_attention[0][name].shape[-1]),
                **unit_header(units[name], item.large, item.small),
            }
            for name, item in stats.per_unit.items()
        },
        "unit": stats.unit,
        "stage_units": stage_units(list(units)),
        "class_units": class_units,
        "class_scales": scales[:2],
        "channel_group": stats.group,
        "summary": summary,
        "channels": {
            "unit": stats.unit,
            "mean": numbers(channel_mean), "std": numbers(channel_std),
            "group_mean": numbers(group_mean), "group_std": numbers(group_std),
        },
        "classes": {
            "names": class_names, "images": numbers(stats.class_images), "units": classes,
        },
        "samples": sample_reports,
        "sizes": sizes,
    }


def classes_rising(report: dict[str, Any], unit: str) -> tuple[int, int]:
    """Classes (with images) whose mean difference on ``unit`` is larger at the second scale
    than at the first (Figure 4's claim), and how many classes have images."""
    mean = report["classes"]["units"][unit]["mean"]
    present = [index for index, count in enumerate(report["classes"]["images"]) if count]
    if len(report["scales"]) < 2:
        return 0, len(present)
    return sum(mean[1][index] > mean[0][index] for index in present), len(present)


def format_findings(report: dict[str, Any]) -> str:
    """The numbers of Figures 3 and 4 as a short text table (what ``sknet analyze`` prints); for
    LSK units, their share of the larger kernel on the object and on the background by size."""
    if report["format"] == SPATIAL_FORMAT:
        return format_spatial(report)
    scales = [scale_label(scale) for scale in report["scales"]]
    first, second, last = scales[0], scales[min(1, len(scales) - 1)], scales[-1]
    skipped = f", {len(report['skipped'])} unreadable skipped" if report["skipped"] else ""
    lines = [
        f"{report['model']} on {report['data']}: {report['images']} images at "
        f"{', '.join(scales)} (central crops of {', '.join(map(str, report['crops']))} of "
        f"{report['input_size']} px){skipped}",
        f"mean attention difference ({difference_label(report)}) per unit: mean ± std over "
        f"images; then its change from {first}: mean ± standard error (share of images where it "
        "rose)",
        "unit      " + "".join(f"{scale:<20}" for scale in scales)
        + "".join(f"{f'{first}->' + scale:<30}" for scale in scales[1:]),
    ]
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in report["summary"]:
        rows.setdefault(row["unit"], []).append(row)
    for name, values in rows.items():
        spread = [f"{row['diff_mean']:+.4f} ± {row['diff_std']:.4f}" for row in values]
        change = [
            f"{row['change_mean']:+.4f} ± {row['change_std'] / math.sqrt(row['images']):.4f} "
            f"({100 * row['rising']:.0f}%)"
            for row in values[1:]
        ]
        lines.append(
            f"{name:<10}" + "".join(f"{cell:<20}" for cell in spread)
            + "".join(f"{cell:<30}" for cell in change)
        )
    if len(scales) > 1:
        counts = [(name, *classes_rising(report, name)) for name in report["class_units"]]
        lines.append(
            f"per class, {first} -> {second}, the mean difference rises in: "
            + ", ".join(f"{name} {up}/{total} classes" for name, up, total in counts)
        )
        large = report["units"][report["unit"]]["large"]
        mean = report["channels"]["mean"]
        up = sum(end > start for start, end in zip(mean[0][large], mean[-1][large], strict=True))
        lines.append(
            f"{report['unit']}: mean attention on {large_label(report)} rises from {first} to "
            f"{last} in {up}/{len(mean[0][large])} channels"
        )
    if report.get("sizes"):
        lines += format_sizes(report["sizes"], difference_label(report))
    return "\n".join(line.rstrip() for line in lines)

