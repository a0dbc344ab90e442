"""Figures 3a, 3b, 3c and 4 as PNG (matplotlib's object API on the Agg canvas: no pyplot, no
global backend change)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from sknet.analysis.report import contrast_title, difference_label, large_label
from sknet.analysis.spatial import REGIONS, on_canvas
from sknet.analysis.stimulus import enlarge, scale_label
from sknet.atomic import atomic_path, printable
from sknet.preprocessing import Preprocessing

SAMPLE_FIGURES = ("fig3a.png", "fig3b.png")
"""Figures 3a and 3b, one per sampled image, in the report's order of samples."""
AVERAGE_FIGURE = "fig3c.png"
CLASS_FIGURE = "fig4.png"
SIZE_FIGURE = "fig_size.png"
REGION_FIGURE = "fig_regions.png"
MAP_FIGURE = "fig_maps.png"
CHANNEL_FIGURES = (*SAMPLE_FIGURES, AVERAGE_FIGURE, CLASS_FIGURE)
"""What :func:`write_figures` writes (SK and split-attention units); :data:`SIZE_FIGURE` too where
the report has sizes."""
SPATIAL_FIGURES = (REGION_FIGURE, MAP_FIGURE)
"""What :func:`write_spatial_figures` writes (LSK units)."""


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


def _titled(figure: Any, title: str, report: dict[str, Any]) -> Any:
    """``figure`` with ``title`` and the model and data it shows as its heading."""
    figure.suptitle(f"{title}, {report['model']} on {report['data']}")
    return figure


def _difference_axis(report: dict[str, Any]) -> str:
    return f"mean attention difference ({difference_label(report)})"


def _label(axes, xlabel: str, ylabel: str, title: str, legend: str | None = None) -> None:
    """A panel's axis labels, title, legend (titled ``legend``, if any) and grid."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if legend is not None:
        axes.legend(title=legend)
    axes.grid(alpha=0.3)


def _display(image: torch.Tensor, preprocessing: Preprocessing):
    """A normalised ``[C, H, W]`` input as an array for ``imshow`` (pixels back in [0, 1])."""
    mean, std = (
        torch.tensor(values, dtype=torch.float32)[:, None, None]
        for values in preprocessing.unit_normalization()
    )
    pixels = (image.float().cpu() * std + mean).clamp(0, 1)
    return pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()


def _channel_panel(axes, report: dict[str, Any], groups, stds=None) -> None:
    """Figure 3 (left): large-kernel attention per group of channels, one line per scale."""
    unit = report["units"][report["unit"]]
    group = report["channel_group"]
    for position, scale in enumerate(report["scales"]):
        values = groups[position][unit["large"]]
        x = [index * group for index in range(len(values))]
        axes.plot(x, values, marker="o", markersize=3, color=f"C{position}",
                  label=scale_label(scale))
        if stds is not None:
            _band(axes, x, values, stds[position][unit["large"]], f"C{position}")
    _label(axes, f"channel index (averages of {group} successive channels)", "attention",
           f"attention for {large_label(report)} in {report['unit']}", "object size")


def _band(axes, x, values, spread, color: str) -> None:
    """Shade the band ``values`` +- ``spread`` around a plotted line."""
    axes.fill_between(
        x, [v - s for v, s in zip(values, spread, strict=True)],
        [v + s for v, s in zip(values, spread, strict=True)],
        color=color, alpha=0.15, linewidth=0,
    )


def _unit_panel(axes, report: dict[str, Any], values, stds=None) -> None:
    """Figure 3 (right): mean attention difference per SK unit, one line per scale."""
    names = report["stage_units"]
    x = list(range(len(names)))
    for position, scale in enumerate(report["scales"]):
        y = [values[name][position] for name in names]
        axes.plot(x, y, marker="o", color=f"C{position}", label=scale_label(scale))
        if stds is not None:
            _band(axes, x, y, [stds[name][position] for name in names], f"C{position}")
    axes.axhline(0, color="0.5", linewidth=0.8)
    axes.set_xticks(x, names)
    _label(axes, "SK unit (last of each stage)", _difference_axis(report),
           f"{contrast_title(report)}, per unit", "object size")


def figure_sample(report: dict[str, Any], sample: dict[str, Any], images, preprocessing):
    """Figure 3a or 3b: one image at every scale, its channel attention, its unit differences."""
    from matplotlib.figure import Figure

    scales = report["scales"]
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=[1.2, 1], height_ratios=[1, 1.1])
    row = grid[0, 0].subgridspec(1, len(scales))
    for position, scale in enumerate(scales):
        axes = figure.add_subplot(row[0, position])
        picture = _display(images[position], preprocessing)
        small = max(picture.shape[:2]) <= 64
        axes.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1,
                    interpolation="nearest" if small else "antialiased")
        axes.set_title(f"{scale_label(scale)} (crop {report['crops'][position]} px)")
        axes.set_axis_off()
    _channel_panel(figure.add_subplot(grid[1, 0]), report, sample["channel_groups"])
    differences = {name: sample["diff"][name] for name in report["units"]}
    _unit_panel(figure.add_subplot(grid[:, 1]), report, differences)
    title = f"Figure {sample['figure']}: validation image {sample['index']} "
    return _titled(figure, printable(f"{title}(class {sample['class_name']})"), report)


def figure_average(report: dict[str, Any]):
    """Figure 3c: Figure 3's panels averaged over every image, with ±1 std bands."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    channels = report["channels"]
    _channel_panel(left, report, channels["group_mean"], channels["group_std"])
    means: dict[str, list[float]] = {}
    stds: dict[str, list[float]] = {}
    for row in report["summary"]:
        means.setdefault(row["unit"], []).append(row["diff_mean"])
        stds.setdefault(row["unit"], []).append(row["diff_std"])
    _unit_panel(right, report, means, stds)
    title = f"Figure 3c: average over {report['images']} validation images (bands: ±1 std)"
    return _titled(figure, title, report)


def figure_classes(report: dict[str, Any]):
    """Figure 4: per class, the mean difference on the chosen units at the first two scales."""
    from matplotlib.figure import Figure

    classes = report["classes"]
    names = [printable(str(name)) for name in classes["names"]]  # folder names of any bytes
    units = report["class_units"]
    figure = Figure(figsize=(5.2 * len(units), 4.6), layout="constrained")
    panels = figure.subplots(1, len(units), squeeze=False)[0]
    few = len(names) <= 20
    x = list(range(len(names)))
    for axes, name in zip(panels, units, strict=True):
        values = classes["units"][name]["mean"]
        for position, scale in enumerate(report["class_scales"]):
            y = [math.nan if value is None else value for value in values[position]]
            axes.plot(x, y, color=f"C{position}", label=scale_label(scale),
                      marker="o" if few else None, linewidth=1.2 if few else 0.6)
        if few:
            axes.set_xticks(x, names)
        _label(axes, "class" if few else "class index", _difference_axis(report),
               f"{name}, per class")
    # One legend beside the panels: inside one it can hide a class's point.
    figure.legend(*panels[0].get_legend_handles_labels(), title="object size",
                  loc="outside right upper")
    title = f"Figure 4: mean attention difference per class ({report['images']} images)"
    return _titled(figure, title, report)


def write_figures(
    report: dict[str, Any], sample_images: torch.Tensor, preprocessing: Preprocessing,
    out: Path,
) -> None:
    for sample, image, name in zip(report["samples"], sample_images, SAMPLE_FIGURES,
                                   strict=True):
        stimuli = [enlarge(image, scale) for scale in report["scales"]]
        _save(figure_sample(report, sample, stimuli, preprocessing), out / name)
    _save(figure_average(report), out / AVERAGE_FIGURE)
    _save(figure_classes(report), out / CLASS_FIGURE)
    if report.get("sizes"):
        _save(figure_sizes(report), out / SIZE_FIGURE)


def figure_sizes(report: dict[str, Any]):
    """Attention difference against the objects' true height (1.0x), one line per unit with
    ±1 standard-error bars: the paper's Figure 3 (right) with measured sizes instead of
    enlargement."""
    from matplotlib.figure import Figure

    sizes = report["sizes"]
    centres = [(low + high) / 2 for low, high in sizes["bins"]]
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.subplots()
    for position, (name, values) in enumerate(sizes["units"].items()):
        axes.errorbar(centres, values["mean"], yerr=values["sem"], marker="o", capsize=3,
                      color=f"C{position}", label=name)
    axes.axhline(0, color="0.5", linewidth=0.8)
    _label(axes, "object height on the canvas (pixels, measured)", _difference_axis(report),
           f"{contrast_title(report)}, by true object size", "SK unit")
    total = sum(sizes["images"])
    return _titled(figure, f"Attention by object size ({total} images, bars: ±1 s.e.)", report)



def figure_regions(report: dict[str, Any]):
    """LSK units: the share of the larger kernel on the object and on the background against
    the objects' true height, one panel per unit, ±1 standard-error bars."""
    from matplotlib.figure import Figure

    sizes = report["sizes"]
    centres = [(low + high) / 2 for low, high in sizes["bins"]]
    names = list(sizes["units"])
    figure = Figure(figsize=(4.2 * len(names) + 1, 4.4), layout="constrained")
    panels = figure.subplots(1, len(names), squeeze=False, sharey=True)[0]
    for index, (axes, name) in enumerate(zip(panels, names, strict=True)):
        for position, region in enumerate(REGIONS[:2]):
            values = sizes["units"][name][region]
            axes.errorbar(centres, values["mean"], yerr=values["sem"], marker="o", capsize=3,
                          color=f"C{position}", label=region)
        axes.axhline(0.5, color="0.5", linewidth=0.8)
        rows, columns = report["units"][name]["map_size"]
        ylabel = "share of the larger kernel, a_large / (a_small + a_large)" if not index else ""
        _label(axes, "object height (pixels, measured)", ylabel,
               f"{name} ({rows}x{columns} map)", "region")
    total = sum(sizes["images"])
    title = f"LSK selection on the object and around it, by object size ({total} images, ±1 s.e.)"
    return _titled(figure, title, report)


def _box(axes, box: list[int], color: str) -> None:
    """Outline a ``(top, bottom, left, right)`` box of canvas pixels."""
    from matplotlib.patches import Rectangle

    top, bottom, left, right = box
    axes.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1,
                             fill=False, edgecolor=color, linewidth=1.5))


def figure_maps(report: dict[str, Any], images: torch.Tensor, preprocessing: Preprocessing):
    """LSK units: two validation images with their object's box, and every unit's share of the
    larger kernel as the analysis places it on the canvas (each pixel takes its nearest cell's),
    with the box."""
    from matplotlib.figure import Figure

    names = list(report["units"])
    figure = Figure(figsize=(2.6 * (len(names) + 1) + 1, 2.6 * len(report["samples"]) + 0.6),
                    layout="constrained")
    panels = figure.subplots(len(report["samples"]), len(names) + 1, squeeze=False)
    shown = None
    for row, sample, image in zip(panels, report["samples"], images, strict=True):
        row[0].imshow(_display(image, preprocessing), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
        _box(row[0], sample["box"], "C1")
        row[0].set_title(printable(f"image {sample['index']} (class {sample['class_name']}, "
                                   f"{sample['height']} px)"), fontsize=9)
        for axes, name in zip(row[1:], names, strict=True):
            values = sample["units"][name]
            share = on_canvas(torch.tensor([values["map"]]), report["input_size"])[0]
            shown = axes.imshow(share.numpy(), vmin=0, vmax=1, cmap="viridis",
                                interpolation="nearest")
            _box(axes, sample["box"], "C1")
            axes.set_title(f"{name}: object {values['object']:.2f}, "
                           f"background {values['background']:.2f}", fontsize=9)
        for axes in row:
            axes.set_axis_off()
    figure.colorbar(shown, ax=panels, label="share of the larger kernel", shrink=0.8)
    return _titled(figure, "LSK selection on the canvas, with the object's box", report)


def write_spatial_figures(
    report: dict[str, Any], sample_images: torch.Tensor, preprocessing: Preprocessing,
    out: Path,
) -> None:
    _save(figure_regions(report), out / REGION_FIGURE)
    _save(figure_maps(report, sample_images, preprocessing), out / MAP_FIGURE)
