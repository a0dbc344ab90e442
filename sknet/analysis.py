"""Attention versus object size: the analysis of Section 4.4 (Figures 3 and 4).

The stimulus (Section 4.4): every validation image is shown at scales 1.0x, 1.5x, 2.0x by a central
crop of 1/s of its side resized back to the input size, so the central object grows while the
image size stays. The crop is taken from the *evaluation image*, the tensor the network sees at
1.0x (after the dataset's resize, centre crop and normalisation of
:meth:`~sknet.data.Source.val_set`), so 1.0x is exactly what ``sknet eval`` measures and every
scale keeps the evaluation framing.
Normalisation is a per-channel affine map and bilinear resizing is an affine combination of
pixels, so cropping after it equals cropping before it. The enlarged images are upsampled from
the evaluation image and therefore slightly softer than the original (for ImageNet a crop of the
full-resolution file would be sharper; the paper does not say which it used).

For each scale the batch goes through the network once, and a forward hook on each SK unit's
``attention`` submodule (whose output is the softmax weights ``[N, M, C]``, Eq. 5) records the
selection of every unit, named ``SK_{stage}_{block}`` by ``model.sk_units()``. Statistics are
running sums and sums of squares (per unit, scale and class, and per channel of one chosen unit),
so memory does not grow with the dataset; only the two sample images keep their own numbers.

Per unit and scale, the number of Figure 3 (right) is the mean over channels of the attention on
the branch of largest receptive field minus that on the smallest (for SKNet-50: the dilated
"5x5" minus the 3x3), then averaged over images. :func:`analyze` writes it and the rest to a folder
as CSV, JSON and the paper's pictures (see ``docs/analysis.md``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from sknet.atomic import atomic_path, write_json, write_text
from sknet.data import Skipped, collate
from sknet.layers import SKConv
from sknet.train import default_workers, open_trained, pick_device

SCALES = (1.0, 1.5, 2.0)
"""Object sizes of Section 4.4."""
CHANNEL_GROUP = 16
"""Figure 3 (left) plots averages of 16 successive channels (SK_3_4's 256 give 16 points)."""


def default_channel_group(channels: int) -> int:
    """Default channels per point of Figure 3 (left): the paper's 16, fewer for narrow units so
    that the panel keeps at least 16 points (4 for a 64-channel unit)."""
    return max(1, min(CHANNEL_GROUP, channels // 16))
SAMPLE_SEED = 0
"""Seed of the two "randomly sampled" images of Figure 3a,b when none are given."""
FORMAT = "sknet-attention-analysis"
FILES = ("analysis.json", "units.csv", "channels.csv", "classes.csv",
         "fig3a.png", "fig3b.png", "fig3c.png", "fig4.png")
"""Everything :func:`analyze` writes into its output folder."""


# ---------------------------------------------------------------------------------------------
# the stimulus


def crop_side(side: int, scale: float) -> int:
    """Pixels of the central crop that shows an object ``scale`` times larger: ``side / scale``."""
    return max(1, round(side / scale))


def enlarge(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Section 4.4's stimulus: the central ``1/scale`` of each side, resized back (bilinear).

    Args:
        images: ``[N, C, H, W]`` (or one ``[C, H, W]`` image), e.g. normalised evaluation inputs.
        scale: object magnification, >= 1 (1 returns ``images`` unchanged).

    Returns:
        Images of the same shape whose central object is ``scale`` times larger (exactly
        ``H / crop_side(H, scale)``; the crop is rounded to whole pixels).
    """
    if not (math.isfinite(scale) and scale >= 1):
        raise ValueError(f"scale must be a number >= 1 (a central crop), got {scale}")
    single = images.dim() == 3
    batch = images[None] if single else images
    height, width = batch.shape[-2:]
    crop_height, crop_width = crop_side(height, scale), crop_side(width, scale)
    if (crop_height, crop_width) != (height, width):
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        crop = batch[..., top : top + crop_height, left : left + crop_width]
        batch = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
    return batch[0] if single else batch


# ---------------------------------------------------------------------------------------------
# SK units and their attention


_UNIT_NAME = re.compile(r"SK_(\d+)_(\d+)[a-z]?")


def stages(names: Sequence[str]) -> list[list[str]]:
    """Unit names grouped by stage (the ``{stage}`` of ``SK_{stage}_{block}``), in order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        match = _UNIT_NAME.fullmatch(name)
        groups.setdefault(match.group(1) if match else "", []).append(name)
    return list(groups.values())


def default_unit(names: Sequence[str]) -> str:
    """The unit of Figure 3 (left): the last of the second SK stage (SK_3_4 in SKNet-50)."""
    groups = stages(names)
    return groups[min(1, len(groups) - 1)][-1]


def stage_units(names: Sequence[str]) -> list[str]:
    """The last unit of every stage: Figure 3 (right) (SK_2_3, SK_3_4, SK_4_6, SK_5_3)."""
    return [group[-1] for group in stages(names)]


def default_class_units(names: Sequence[str]) -> list[str]:
    """Figure 4's low, middle and high unit: the last of the first, second and last stage."""
    last = stage_units(names)
    return list(dict.fromkeys([last[0], last[min(1, len(last) - 1)], last[-1]]))


def selecting_units(model: nn.Module) -> dict[str, SKConv]:
    """The SK units of ``model`` that select with attention, by their ``SK_{stage}_{block}`` name.

    Raises:
        ValueError: the model has no SK units, or none with attention between branches of
            different receptive fields.
    """
    name = getattr(model, "config", {}).get("name", type(model).__name__)
    finder = getattr(model, "sk_units", None)
    units = finder() if callable(finder) else {}
    if not units:
        raise ValueError(
            f"model {name!r} has no SK units, so there is no kernel selection to analyse; "
            "use an SK network (e.g. sknet50, sknet29, sk_shufflenet_v2_x1_0, sknet_digits)"
        )
    selecting = {
        unit_name: unit for unit_name, unit in units.items()
        if unit.attention is not None and len(set(unit.receptive_fields)) > 1
    }
    if not selecting:
        raise ValueError(
            f"model {name!r}: its SK units have no attention between kernels of different "
            "receptive fields (attention=False, one branch, or equal kernels); nothing to analyse"
        )
    return selecting


@contextlib.contextmanager
def capture(units: Mapping[str, SKConv]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the attention ``[N, M, C]`` of every unit at each forward pass, by unit name.

    Uses only the public contract: a forward hook on each unit's ``attention`` submodule, whose
    output is the softmax weights. The hooks are removed when the block ends.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def recorder(unit_name: str):
        def hook(module: nn.Module, inputs: Any, weights: torch.Tensor) -> None:
            captured[unit_name] = weights.detach().float()

        return hook

    try:
        for unit_name, unit in units.items():
            handles.append(unit.attention.register_forward_hook(recorder(unit_name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def capture_attention(
    model: nn.Module, images: torch.Tensor, units: Mapping[str, SKConv] | None = None
) -> dict[str, torch.Tensor]:
    """The attention of every SK unit for ``images`` in one forward pass (model in eval mode).

    Returns:
        ``{name: weights [N, M, C]}`` in ``model.sk_units()`` order; weights sum to 1 over M.
    """
    units = selecting_units(model) if units is None else units
    with capture(units) as captured:
        model(images)
        return {name: captured[name] for name in units}


def scale_label(scale: float) -> str:
    """``1.0x``, ``1.5x``, ``1.25x``: the paper's way of writing an object size."""
    return f"{scale:.1f}x" if round(scale, 1) == scale else scale_label(scale)


def branch_label(branch: Sequence[int]) -> str:
    """``3x3`` or ``3x3 dil 2`` for a ``(kernel, dilation, groups)`` branch."""
    kernel, dilation = branch[0], branch[1]
    return f"{kernel}x{kernel}" + (f" dil {dilation}" if dilation > 1 else "")


# ---------------------------------------------------------------------------------------------
# streaming statistics


@dataclass
class _Moments:
    """Running count-weighted sum and sum of squares (float64) of a tensor of statistics."""

    total: torch.Tensor
    squares: torch.Tensor

    @classmethod
    def zeros(cls, *shape: int) -> _Moments:
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
class _UnitStatistics:
    """Per-scale sums of one unit: the large-minus-small difference and each branch's mean."""

    large: int
    small: int
    difference: _Moments
    change: _Moments
    rising: torch.Tensor
    branches: _Moments
    classes: _Moments

    @classmethod
    def zeros(cls, unit: SKConv, scales: int, classes: int) -> _UnitStatistics:
        fields_ = unit.receptive_fields
        branches = len(fields_)
        return cls(
            large=max(range(branches), key=fields_.__getitem__),
            small=min(range(branches), key=fields_.__getitem__),
            difference=_Moments.zeros(scales), change=_Moments.zeros(scales),
            rising=torch.zeros(scales, dtype=torch.float64),
            branches=_Moments.zeros(scales, branches), classes=_Moments.zeros(scales, classes),
        )


def _differences(weights: torch.Tensor, large: int, small: int) -> torch.Tensor:
    """Mean over channels of the large-RF branch's attention minus the small one's: ``[N]``."""
    return (weights[:, large] - weights[:, small]).mean(1)


def _channel_groups(weights: torch.Tensor, group: int) -> torch.Tensor:
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
        units: the SK units, by name.
        scales: number of scales.
        classes: number of classes.
        unit: the unit whose per-channel attention is kept (Figure 3, left).
        channels: that unit's channels.
        group: channels per point of Figure 3 (left).
    """

    def __init__(
        self, units: Mapping[str, SKConv], scales: int, classes: int, unit: str, channels: int,
        group: int,
    ) -> None:
        self.units = units
        self.unit = unit
        self.group = group
        self.images = 0
        self.class_images = torch.zeros(classes, dtype=torch.float64)
        self.per_unit = {
            name: _UnitStatistics.zeros(item, scales, classes) for name, item in units.items()
        }
        branches = len(units[unit].receptive_fields)
        self.channels = _Moments.zeros(scales, branches, channels)
        self.channel_groups = _Moments.zeros(scales, branches, math.ceil(channels / group))

    def add(self, attention: Sequence[Mapping[str, torch.Tensor]], targets: torch.Tensor) -> None:
        """Add one batch: ``attention[scale][unit]`` is ``[B, M, C]``; ``targets`` ``[B]``."""
        targets = targets.cpu()
        self.images += len(targets)
        self.class_images.index_add_(0, targets, torch.ones(len(targets), dtype=torch.float64))
        for name, stats in self.per_unit.items():
            per_scale = [scale[name].double().cpu() for scale in attention]
            differences = torch.stack(
                [_differences(weights, stats.large, stats.small) for weights in per_scale], 1
            )
            change = differences - differences[:, :1]
            stats.difference.add(differences)
            stats.change.add(change)
            stats.rising += (change > 0).double().sum(0)
            stats.branches.add(torch.stack([weights.mean(2) for weights in per_scale], 1))
            stats.classes.add_at(1, targets, differences.T)
        chosen = torch.stack([scale[self.unit].double().cpu() for scale in attention], 1)
        self.channels.add(chosen)
        self.channel_groups.add(_channel_groups(chosen, self.group))


# ---------------------------------------------------------------------------------------------
# the run


def _number(value: float) -> float:
    """Eight significant digits: readable files, identical across identical runs."""
    return float(f"{value:.8g}")


def _numbers(values: torch.Tensor) -> Any:
    return [_numbers(item) for item in values] if values.dim() else _number(float(values))


def _check_choices(
    units: Mapping[str, SKConv], all_units: Sequence[str], chosen: Sequence[str], flag: str
) -> None:
    for name in chosen:
        if name not in units:
            have = ", ".join(units)
            why = (
                "it has no attention between different kernels"
                if name in all_units
                else "no such SK unit"
            )
            raise ValueError(f"{flag} {name}: {why}; the model's analysable units are {have}")


def _sample_indices(count: int, samples: Sequence[int] | None) -> list[int]:
    if samples is None:
        if count < 2:
            raise ValueError(f"the validation set has {count} image(s); Figure 3a,b needs two")
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        return sorted(torch.randperm(count, generator=generator)[:2].tolist())
    samples = [int(index) for index in samples]
    if len(samples) != 2:
        raise ValueError(f"--samples takes two image indices (Figure 3a and 3b), got {samples}")
    for index in samples:
        if not 0 <= index < count:
            raise ValueError(
                f"--samples {index}: out of range; the validation set has {count} images "
                f"(0..{count - 1})"
            )
    return samples


def _validate(
    scales: Sequence[float], limit: int | None, batch_size: int, group: int | None, size: int
) -> list[float]:
    scales = [float(scale) for scale in scales]
    if not scales:
        raise ValueError("--scales: give at least one scale, e.g. 1.0 1.5 2.0")
    for scale in scales:
        if not (math.isfinite(scale) and 1 <= scale <= size):
            raise ValueError(
                f"--scales {scale}: a scale is a central crop of 1/s of the side, so it must be "
                f"between 1 and the input size {size}"
            )
    if len({crop_side(size, scale) for scale in scales}) != len(scales):
        raise ValueError(
            f"--scales {' '.join(map(str, scales))}: two scales give the same {size}-pixel crop"
        )
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if group is not None and group < 1:
        raise ValueError(f"--channel-group must be >= 1, got {group}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    return scales


def analyze(
    checkpoint: str | os.PathLike,
    data: str | None = None,
    out: str | os.PathLike = "analysis",
    *,
    scales: Sequence[float] = SCALES,
    unit: str | None = None,
    units: Sequence[str] | None = None,
    samples: Sequence[int] | None = None,
    limit: int | None = None,
    batch_size: int = 128,
    workers: int | None = None,
    device: str = "auto",
    channel_group: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the analysis of Section 4.4 on trained weights and write its numbers and figures.

    Args:
        checkpoint: a training ``out`` folder, ``best.safetensors``/``X.safetensors``, a weights
            folder or a ``last.pt`` (as ``sknet eval`` takes).
        data: ``--data`` spec (default: the dataset recorded with the weights); its validation
            images are analysed, prepared as for evaluation at the training input size.
        out: folder for :data:`FILES` (created; existing files of those names are replaced).
        scales: object magnifications (>= 1); Figure 4 uses the first two.
        unit: the unit of Figure 3 (left) (default :func:`default_unit`, SK_3_4 for SKNet-50).
        units: the units of Figure 4 (default :func:`default_class_units`).
        samples: validation-set indices of the two images of Figure 3a,b (default: two drawn
            with seed :data:`SAMPLE_SEED`).
        limit: analyse only this many images, evenly spaced over the validation set.
        batch_size: images per forward pass.
        workers: data-loader processes (default: as ``sknet eval``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        channel_group: channels averaged per point in Figure 3 (left) (default
            :func:`default_channel_group`: 16, fewer for units under 256 channels).
        progress: show a progress bar (stderr).
        command: the command line to record (the CLI passes its own).

    Returns:
        The report also written as ``out/analysis.json``.
    """
    trained = open_trained(checkpoint, data, flag="--checkpoint")
    model = trained.model
    analysable = selecting_units(model)
    names = list(analysable)
    unit = unit or default_unit(names)
    class_units = list(units) if units else default_class_units(names)
    _check_choices(analysable, list(model.sk_units()), [unit], "--unit")
    _check_choices(analysable, list(model.sk_units()), class_units, "--units")
    size = int(trained.record["preprocessing"]["input_size"])
    scales = _validate(scales, limit, batch_size, channel_group, size)
    dataset = trained.source.val_set(size, trained.preprocessing)
    samples = _sample_indices(len(dataset), samples)
    chosen_device = pick_device(device)
    model.to(chosen_device)

    sample_images, sample_labels = _read_samples(dataset, samples)
    sample_attention = _forward_scales(model, analysable, sample_images, scales, chosen_device)
    channels = sample_attention[0][unit].shape[-1]
    stats = AttentionStatistics(
        analysable, len(scales), len(trained.source.class_names), unit, channels,
        channel_group or default_channel_group(channels),
    )
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, [index * len(dataset) // limit for index in range(limit)])
    workers = default_workers(trained.source) if workers is None else workers
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
        pin_memory=chosen_device.type == "cuda",
    )
    skipped = _stream(model, analysable, loader, scales, stats, chosen_device, progress)
    if not stats.images:
        raise ValueError(f"--data {trained.data}: no validation image could be read")

    report = _report(
        trained, stats, scales, size, class_units, samples, sample_labels, sample_attention,
        skipped, limit, command,
    )
    out = Path(out)
    _write_tables(report, out)
    _write_figures(report, sample_images, trained.source.preprocessing(size), out)
    return report


def _stream(
    model: nn.Module,
    units: Mapping[str, SKConv],
    loader: DataLoader,
    scales: Sequence[float],
    stats: AttentionStatistics,
    device: torch.device,
    progress: bool,
) -> list[str]:
    """Feed every batch at every scale into ``stats``; returns the unreadable files' paths."""
    from tqdm import tqdm

    skipped: list[str] = []
    with tqdm(
        total=len(loader.dataset), unit="img", desc="analyze", disable=not progress,
        leave=False, dynamic_ncols=True,
    ) as bar:
        for images, targets, unreadable in loader:
            for item in unreadable:
                bar.write(f"skipped {item.path}: {item.reason}")
            skipped.extend(item.path for item in unreadable)
            if len(images):
                stats.add(_forward_scales(model, units, images, scales, device), targets)
            bar.update(len(images) + len(unreadable))
    return skipped


def _read_samples(dataset, samples: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    images, labels = [], []
    for index in samples:
        item = dataset[index]
        if isinstance(item, Skipped):
            raise ValueError(
                f"--samples {index}: {item.path} cannot be read ({item.reason}); choose another"
            )
        images.append(item[0])
        labels.append(int(item[1]))
    return torch.stack(images), labels


@torch.inference_mode()
def _forward_scales(
    model: nn.Module,
    units: Mapping[str, SKConv],
    images: torch.Tensor,
    scales: Sequence[float],
    device: torch.device,
) -> list[dict[str, torch.Tensor]]:
    """One forward pass per scale; the attention of every unit at each, on the CPU."""
    images = images.to(device, non_blocking=True)
    results = []
    with capture(units) as captured:
        for scale in scales:
            model(enlarge(images, scale))
            results.append({name: captured[name].cpu() for name in units})
    return results


# ---------------------------------------------------------------------------------------------
# the report


def _sample_report(
    stats: AttentionStatistics, position: int, index: int, label: int, class_name: str,
    attention: list[dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """The numbers of Figure 3a or 3b for the image at ``position`` of the sample batch."""
    per_scale = [{name: weights[position].double() for name, weights in scale.items()}
                 for scale in attention]
    differences = {
        name: _numbers(torch.stack([
            _differences(scale[name][None], item.large, item.small)[0] for scale in per_scale
        ]))
        for name, item in stats.per_unit.items()
    }
    branch_means = {
        name: _numbers(torch.stack([scale[name].mean(1) for scale in per_scale]))
        for name in stats.per_unit
    }
    channels = torch.stack([scale[stats.unit] for scale in per_scale])
    return {
        "figure": "3" + "ab"[position], "index": index, "label": label,
        "class_name": class_name, "diff": differences, "branch_mean": branch_means,
        "channels": _numbers(channels),
        "channel_groups": _numbers(_channel_groups(channels, stats.group)),
    }


def _report(
    trained, stats: AttentionStatistics, scales: list[float], size: int,
    class_units: list[str], samples: list[int], sample_labels: list[int],
    sample_attention: list[dict[str, torch.Tensor]], skipped: list[str], limit: int | None,
    command: str | None,
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
                "diff_mean": _number(difference[0][index]),
                "diff_std": _number(difference[1][index]),
                "change_mean": _number(change[0][index]),
                "change_std": _number(change[1][index]),
                "rising": _number(unit_stats.rising[index] / count),
                "branch_mean": _numbers(branches[0][index]),
                "branch_std": _numbers(branches[1][index]),
            })
    channel_mean, channel_std = stats.channels.mean_std(count)
    group_mean, group_std = stats.channel_groups.mean_std(count)
    classes = {}
    absent = stats.class_images == 0  # no image of the class analysed (e.g. with a limit)
    for name in stats.per_unit:
        mean, std = stats.per_unit[name].classes.mean_std(stats.class_images)
        classes[name] = {
            key: [[None if absent[index] else value for index, value in enumerate(row)]
                  for row in _numbers(values)]
            for key, values in (("mean", mean), ("std", std))
        }
    sample_reports = [
        _sample_report(stats, position, index, label, class_names[label], sample_attention)
        for position, (index, label) in enumerate(zip(samples, sample_labels, strict=True))
    ]
    return {
        "format": FORMAT,
        "format_version": 1,
        "command": command,
        "checkpoint": str(trained.path),
        "model": trained.record["model"],
        "data": trained.data,
        "input_size": size,
        "scales": scales,
        "crops": [crop_side(size, scale) for scale in scales],
        "images": count,
        "limit": limit,
        "skipped": skipped,
        "units": {
            name: {
                "channels": int(sample_attention[0][name].shape[-1]),
                "branches": [list(branch) for branch in units[name].branch_specs],
                "receptive_fields": list(units[name].receptive_fields),
                "large": item.large,
                "small": item.small,
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
            "mean": _numbers(channel_mean), "std": _numbers(channel_std),
            "group_mean": _numbers(group_mean), "group_std": _numbers(group_std),
        },
        "classes": {
            "names": class_names, "images": _numbers(stats.class_images), "units": classes,
        },
        "samples": sample_reports,
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
    """The numbers of Figures 3 and 4 as a short text table (what ``sknet analyze`` prints)."""
    scales = [scale_label(scale) for scale in report["scales"]]
    first, second, last = scales[0], scales[min(1, len(scales) - 1)], scales[-1]
    skipped = f", {len(report['skipped'])} unreadable skipped" if report["skipped"] else ""
    lines = [
        f"{report['model']} on {report['data']}: {report['images']} images at "
        f"{', '.join(scales)} (central crops of {', '.join(map(str, report['crops']))} of "
        f"{report['input_size']} px){skipped}",
        f"mean attention difference ({_difference_label(report)}) per unit: mean ± std over "
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
            f"{report['unit']}: mean attention on {_large_label(report)} rises from {first} to "
            f"{last} in {up}/{len(mean[0][large])} channels"
        )
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------------------------
# files


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    table = io.StringIO()
    writer = csv.DictWriter(table, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return table.getvalue()


def _sources(report: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """``("all", None)``, then ``("sample_a", sample)`` and ``("sample_b", sample)``."""
    return [("all", None)] + [
        ("sample_" + sample["figure"][-1], sample) for sample in report["samples"]
    ]


UNIT_COLUMNS = [
    "source", "index", "unit", "channels", "receptive_fields", "scale", "crop", "images",
    "diff_mean", "diff_std", "change_mean", "change_std", "rising",
]
"""``units.csv``; then ``branch{m}_rf``, ``branch{m}_mean``, ``branch{m}_std`` for m = 1..M."""


def unit_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``units.csv``: per source (all images, each sample), unit and scale."""
    rows = []
    for source, sample in _sources(report):
        for name, unit in report["units"].items():
            summary = [row for row in report["summary"] if row["unit"] == name]
            for position, scale in enumerate(report["scales"]):
                row: dict[str, Any] = {
                    "source": source, "index": "" if sample is None else sample["index"],
                    "unit": name, "channels": unit["channels"],
                    "receptive_fields": " ".join(map(str, unit["receptive_fields"])),
                    "scale": scale, "crop": report["crops"][position],
                }
                if sample is None:
                    stats = summary[position]
                    row.update({key: stats[key] for key in UNIT_COLUMNS[7:]})
                    means, stds = stats["branch_mean"], stats["branch_std"]
                else:
                    differences = sample["diff"][name]
                    change = _number(differences[position] - differences[0])
                    row.update({
                        "images": 1, "diff_mean": differences[position], "diff_std": "",
                        "change_mean": change, "change_std": "", "rising": int(change > 0),
                    })
                    means = sample["branch_mean"][name][position]
                    stds = [""] * len(means)
                for branch, receptive_field in enumerate(unit["receptive_fields"]):
                    row[f"branch{branch + 1}_rf"] = receptive_field
                    row[f"branch{branch + 1}_mean"] = means[branch]
                    row[f"branch{branch + 1}_std"] = stds[branch]
                rows.append(row)
    return rows


CHANNEL_COLUMNS = ["source", "index", "unit", "scale", "channel", "branch", "receptive_field",
                   "mean", "std"]
CLASS_COLUMNS = ["unit", "scale", "class_index", "class_name", "images", "diff_mean", "diff_std"]


def channel_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``channels.csv``: the chosen unit's attention per channel and branch."""
    name = report["unit"]
    fields_ = report["units"][name]["receptive_fields"]
    rows = []
    for source, sample in _sources(report):
        means = report["channels"]["mean"] if sample is None else sample["channels"]
        for position, scale in enumerate(report["scales"]):
            for branch, receptive_field in enumerate(fields_):
                for channel, mean in enumerate(means[position][branch]):
                    std = report["channels"]["std"][position][branch][channel]
                    rows.append({
                        "source": source, "index": "" if sample is None else sample["index"],
                        "unit": name, "scale": scale, "channel": channel, "branch": branch + 1,
                        "receptive_field": receptive_field, "mean": mean,
                        "std": std if sample is None else "",
                    })
    return rows


def class_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``classes.csv``: per unit, scale and class, the mean difference over its images."""
    classes = report["classes"]
    rows = []
    for name, values in classes["units"].items():
        for position, scale in enumerate(report["scales"]):
            for index, class_name in enumerate(classes["names"]):
                rows.append({
                    "unit": name, "scale": scale, "class_index": index,
                    "class_name": class_name, "images": int(classes["images"][index]),
                    "diff_mean": values["mean"][position][index],
                    "diff_std": values["std"][position][index],
                })
    return rows


def _write_tables(report: dict[str, Any], out: Path) -> None:
    branches = max(len(unit["receptive_fields"]) for unit in report["units"].values())
    unit_columns = UNIT_COLUMNS + [
        f"branch{branch}_{what}" for branch in range(1, branches + 1)
        for what in ("rf", "mean", "std")
    ]
    write_json(out / "analysis.json", report)
    write_text(out / "units.csv", _csv(unit_rows(report), unit_columns))
    write_text(out / "channels.csv", _csv(channel_rows(report), CHANNEL_COLUMNS))
    write_text(out / "classes.csv", _csv(class_rows(report), CLASS_COLUMNS))


# ---------------------------------------------------------------------------------------------
# figures (matplotlib's object API on the Agg canvas: no pyplot, no global backend change)


def _difference_label(report: dict[str, Any]) -> str:
    """``3x3 dil 2 - 3x3`` when every unit has the same branches, else a generic phrase."""
    labels = {
        (branch_label(unit["branches"][unit["large"]]),
         branch_label(unit["branches"][unit["small"]]))
        for unit in report["units"].values()
    }
    if len(labels) == 1:
        large, small = labels.pop()
        return f"{large} − {small}"
    return "largest − smallest receptive field"


def _large_label(report: dict[str, Any]) -> str:
    unit = report["units"][report["unit"]]
    return branch_label(unit["branches"][unit["large"]])


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


def _display(image: torch.Tensor, preprocessing: Mapping[str, Any]):
    """A normalised ``[C, H, W]`` input as an array for ``imshow`` (pixels back in [0, 1])."""
    mean = torch.tensor(preprocessing.get("mean", [0.0]), dtype=torch.float32)[:, None, None]
    std = torch.tensor(preprocessing.get("std", [1.0]), dtype=torch.float32)[:, None, None]
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
            spread = stds[position][unit["large"]]
            axes.fill_between(
                x, [v - s for v, s in zip(values, spread, strict=True)],
                [v + s for v, s in zip(values, spread, strict=True)],
                color=f"C{position}", alpha=0.15, linewidth=0,
            )
    axes.set_xlabel(f"channel index (averages of {group} successive channels)")
    axes.set_ylabel("attention")
    axes.set_title(f"attention for {_large_label(report)} in {report['unit']}")
    axes.legend(title="object size")
    axes.grid(alpha=0.3)


def _unit_panel(axes, report: dict[str, Any], values, stds=None) -> None:
    """Figure 3 (right): mean attention difference per SK unit, one line per scale."""
    names = report["stage_units"]
    x = list(range(len(names)))
    for position, scale in enumerate(report["scales"]):
        y = [values[name][position] for name in names]
        axes.plot(x, y, marker="o", color=f"C{position}", label=scale_label(scale))
        if stds is not None:
            spread = [stds[name][position] for name in names]
            axes.fill_between(
                x, [v - s for v, s in zip(y, spread, strict=True)],
                [v + s for v, s in zip(y, spread, strict=True)],
                color=f"C{position}", alpha=0.15, linewidth=0,
            )
    axes.axhline(0, color="0.5", linewidth=0.8)
    axes.set_xticks(x, names)
    axes.set_xlabel("SK unit (last of each stage)")
    axes.set_ylabel(f"mean attention difference ({_difference_label(report)})")
    axes.set_title("large minus small kernel, per unit")
    axes.legend(title="object size")
    axes.grid(alpha=0.3)


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
    figure.suptitle(
        f"Figure {sample['figure']}: validation image {sample['index']} "
        f"(class {sample['class_name']}), {report['model']} on {report['data']}"
    )
    return figure


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
    figure.suptitle(
        f"Figure 3c: average over {report['images']} validation images (bands: ±1 std), "
        f"{report['model']} on {report['data']}"
    )
    return figure


def figure_classes(report: dict[str, Any]):
    """Figure 4: per class, the mean difference on the chosen units at the first two scales."""
    from matplotlib.figure import Figure

    classes = report["classes"]
    names = classes["names"]
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
        axes.set_xlabel("class" if few else "class index")
        axes.set_ylabel(f"mean attention difference ({_difference_label(report)})")
        axes.set_title(f"{name}, per class")
        axes.legend(title="object size")
        axes.grid(alpha=0.3)
    figure.suptitle(
        f"Figure 4: mean attention difference per class ({report['images']} images), "
        f"{report['model']} on {report['data']}"
    )
    return figure


def _write_figures(
    report: dict[str, Any], sample_images: torch.Tensor, preprocessing: Mapping[str, Any],
    out: Path,
) -> None:
    for sample, image in zip(report["samples"], sample_images, strict=True):
        stimuli = [enlarge(image, scale) for scale in report["scales"]]
        figure = figure_sample(report, sample, stimuli, preprocessing)
        _save(figure, out / f"fig{sample['figure']}.png")
    _save(figure_average(report), out / "fig3c.png")
    _save(figure_classes(report), out / "fig4.png")
