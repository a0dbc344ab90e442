"""``analyze``: the analysis of Section 4.4 on trained weights, from the stream of validation
images to the files (numbers, tables and Figures 3-4)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from sknet.analysis.capture import (
    capture,
    default_class_units,
    default_unit,
    selecting_units,
)
from sknet.analysis.figures import write_figures
from sknet.analysis.report import build_report
from sknet.analysis.sizes import SizeStatistics, size_bins
from sknet.analysis.statistics import AttentionStatistics, default_channel_group
from sknet.analysis.stimulus import SCALES, crop_side, enlarge
from sknet.analysis.tables import write_tables
from sknet.atomic import printable
from sknet.data import Skipped, collate
from sknet.devices import default_workers, pick_device
from sknet.errors import UserError
from sknet.layers import SKConv
from sknet.trained import open_trained

SAMPLE_SEED = 0
"""Seed of the two "randomly sampled" images of Figure 3a,b when none are given."""
SIZE_FILES = ("sizes.csv", "fig_size.png")
"""Written too when the validation set records its objects' sizes (:mod:`sknet.analysis.sizes`)."""
FILES = ("analysis.json", "units.csv", "channels.csv", "classes.csv",
         "fig3a.png", "fig3b.png", "fig3c.png", "fig4.png")
"""Everything :func:`analyze` writes into its output folder."""


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
            raise UserError(f"{flag} {name}: {why}; the model's analysable units are {have}")


def _sample_indices(count: int, samples: Sequence[int] | None) -> list[int]:
    if samples is None:
        if count < 2:
            raise UserError(f"the validation set has {count} image(s); Figure 3a,b needs two")
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        return sorted(torch.randperm(count, generator=generator)[:2].tolist())
    samples = [int(index) for index in samples]
    if len(samples) != 2:
        raise UserError(f"--samples takes two image indices (Figure 3a and 3b), got {samples}")
    for index in samples:
        if not 0 <= index < count:
            raise UserError(
                f"--samples {index}: out of range; the validation set has {count} images "
                f"(0..{count - 1})"
            )
    return samples


def _validate(
    scales: Sequence[float], limit: int | None, batch_size: int, group: int | None, size: int
) -> list[float]:
    scales = [float(scale) for scale in scales]
    if not scales:
        raise UserError("--scales: give at least one scale, e.g. 1.0 1.5 2.0")
    for scale in scales:
        if not (math.isfinite(scale) and 1 <= scale <= size):
            raise UserError(
                f"--scales {scale}: a scale is a central crop of 1/s of the side, so it must be "
                f"between 1 and the input size {size}"
            )
    if len({crop_side(size, scale) for scale in scales}) != len(scales):
        raise UserError(
            f"--scales {' '.join(map(str, scales))}: two scales give the same {size}-pixel crop"
        )
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if group is not None and group < 1:
        raise UserError(f"--channel-group must be >= 1, got {group}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
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
        out: folder for :data:`FILES`, and :data:`SIZE_FILES` where the validation set records
            object sizes (created; existing files of those names are replaced).
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
        The report also written as ``out/analysis.json``; ``report["files"]`` lists what was
        written.
    """
    trained = open_trained(checkpoint, data, flag="--checkpoint")
    model = trained.model
    analysable = selecting_units(model)
    names = list(analysable)
    unit = unit or default_unit(names)
    class_units = list(units) if units else default_class_units(names)
    _check_choices(analysable, list(model.sk_units()), [unit], "--unit")
    _check_choices(analysable, list(model.sk_units()), class_units, "--units")
    preprocessing = trained.preprocessing()  # how the inputs are made
    size = preprocessing.input_size
    scales = _validate(scales, limit, batch_size, channel_group, size)
    dataset = trained.source.val_set(size, preprocessing)
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
    indices = list(range(len(dataset)))
    if limit is not None and limit < len(dataset):
        indices = [index * len(dataset) // limit for index in range(limit)]
        dataset = Subset(dataset, indices)
    sizes = None  # objects of recorded size, seen as they are (1.0x among the scales)
    recorded = trained.source.val_sizes
    if recorded is not None and 1.0 in scales:
        heights = recorded[indices, 0]
        sizes = SizeStatistics(
            {name: (item.large, item.small) for name, item in stats.per_unit.items()},
            size_bins(heights, trained.source.val_size_grid), heights, scales.index(1.0),
        )
    workers = default_workers(trained.source.loader_workers, workers)
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
        pin_memory=chosen_device.type == "cuda",
    )
    skipped = _stream(model, analysable, loader, scales, stats, chosen_device, progress, sizes)
    if not stats.images:
        raise UserError(f"--data {trained.data}: no validation image could be read")

    report = build_report(
        trained, stats, scales, size, class_units, samples, sample_labels, sample_attention,
        skipped, limit, command, None if sizes is None else sizes.report(),
    )
    report["files"] = [*FILES, *(SIZE_FILES if sizes is not None else ())]
    out = Path(out)
    write_tables(report, out)
    write_figures(report, sample_images, preprocessing, out)
    return report


def _stream(
    model: nn.Module,
    units: Mapping[str, SKConv],
    loader: DataLoader,
    scales: Sequence[float],
    stats: AttentionStatistics,
    device: torch.device,
    progress: bool,
    sizes: SizeStatistics | None = None,
) -> list[str]:
    """Feed every batch at every scale into ``stats`` (and into ``sizes``, which pairs the
    images with their heights in loader order); returns the unreadable files' paths."""
    skipped: list[str] = []
    with tqdm(
        total=len(loader.dataset), unit="img", desc="analyze", disable=not progress,
        leave=False, dynamic_ncols=True,
    ) as bar:
        for images, targets, unreadable in loader:
            for item in unreadable:
                bar.write(printable(f"skipped {item.path}: {item.reason}"))
            skipped.extend(item.path for item in unreadable)
            if len(images):
                attention = _forward_scales(model, units, images, scales, device)
                stats.add(attention, targets)
                if sizes is not None:
                    sizes.add_next(attention, len(unreadable))
            bar.update(len(images) + len(unreadable))
    return skipped


def _read_samples(dataset, samples: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    images, labels = [], []
    for index in samples:
        item = dataset[index]
        if isinstance(item, Skipped):
            raise UserError(
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

