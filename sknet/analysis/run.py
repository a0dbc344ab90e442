"""``analyze``: the analysis of Section 4.4 on trained weights, from the stream of validation
images to the files (numbers, tables and Figures 3-4)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from sknet.analysis.capture import (
    capture,
    default_class_units,
    default_unit,
    selecting_units,
)
from sknet.analysis.figures import (
    CHANNEL_FIGURES,
    SIZE_FIGURE,
    SPATIAL_FIGURES,
    write_figures,
    write_spatial_figures,
)
from sknet.analysis.kinds import SPATIAL, contrast, unit_kind
from sknet.analysis.report import build_report
from sknet.analysis.sizes import SizeStatistics, differences, size_bins
from sknet.analysis.spatial import (
    REGIONS,
    SpatialStatistics,
    build_spatial_report,
    check_boxes,
    sample_report,
)
from sknet.analysis.statistics import AttentionStatistics, default_channel_group
from sknet.analysis.stimulus import SCALES, crop_side, enlarge
from sknet.analysis.tables import (
    CHANNEL_TABLES,
    SIZES_TABLE,
    SPATIAL_TABLES,
    write_spatial_tables,
    write_tables,
)
from sknet.atomic import printable
from sknet.data import Skipped, collate
from sknet.devices import default_workers, pick_device
from sknet.errors import UserError
from sknet.trained import Trained, open_trained

SAMPLE_SEED = 0
"""Seed of the two "randomly sampled" images of Figure 3a,b when none are given."""
SIZE_FILES = (SIZES_TABLE, SIZE_FIGURE)
"""Written too when the validation set records its objects' sizes (:mod:`sknet.analysis.sizes`)."""
FILES = (*CHANNEL_TABLES, *CHANNEL_FIGURES)
"""Everything :func:`analyze` writes into its output folder (SK and split-attention units)."""
SPATIAL_FILES = (*SPATIAL_TABLES, *SPATIAL_FIGURES)
"""What :func:`analyze` writes for LSK units (:mod:`sknet.analysis.spatial`)."""


def _check_choices(
    units: Mapping[str, nn.Module], all_units: Sequence[str], chosen: Sequence[str], flag: str
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
    scales: Sequence[float] | None = None,
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

    SK and split-attention units (weights per channel) get Figures 3-4 and, on data of recorded
    object sizes, the difference by size; LSK units (weights per position) get the share of the
    larger kernel on the object and on the background by size (:mod:`sknet.analysis.spatial`,
    data of recorded object boxes only; ``scales``, ``unit``, ``units`` and ``channel_group`` do
    not apply to them).

    Args:
        checkpoint: a training ``out`` folder, ``best.safetensors``/``X.safetensors``, a weights
            folder or a ``last.pt`` (as ``sknet eval`` takes).
        data: ``--data`` spec (default: the dataset recorded with the weights); its validation
            images are analysed, prepared as for evaluation at the training input size.
        out: folder for :data:`FILES`, and :data:`SIZE_FILES` where the validation set records
            object sizes (for LSK units :data:`SPATIAL_FILES`; created; existing files of those
            names are replaced).
        scales: object magnifications (>= 1; default :data:`SCALES`); Figure 4 uses the first
            two.
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
    if any(unit_kind(item) == SPATIAL for item in analysable.values()):
        check_boxes(trained.source, trained.data, scales, {
            "--unit": unit, "--units": units, "--channel-group": channel_group,
        })
        return _analyze_spatial(
            trained, analysable, Path(out), samples, limit, batch_size, workers, device,
            progress, command,
        )
    names = list(analysable)
    unit = unit or default_unit(names)
    class_units = list(units) if units else default_class_units(names)
    _check_choices(analysable, list(model.sk_units()), [unit], "--unit")
    _check_choices(analysable, list(model.sk_units()), class_units, "--units")
    preprocessing = trained.preprocessing()  # how the inputs are made
    size = preprocessing.input_size
    scales = _validate(SCALES if scales is None else scales, limit, batch_size, channel_group,
                       size)
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
    loader, indices = _loader(trained, dataset, limit, batch_size, workers, chosen_device)
    consumers = [lambda attention, targets, skipped: stats.add(attention, targets)]
    sizes = None  # objects of recorded size, seen as they are (1.0x among the scales)
    recorded = trained.source.val_sizes
    if recorded is not None and 1.0 in scales:
        heights = recorded[indices, 0]
        contrasts = {name: (item.large, item.small) for name, item in stats.per_unit.items()}
        sizes = SizeStatistics(
            list(contrasts), size_bins(heights, trained.source.val_size_grid), heights
        )
        at_one = scales.index(1.0)
        consumers.append(lambda attention, targets, skipped: sizes.add_next(
            differences(attention[at_one], contrasts), skipped
        ))
    skipped = _stream(model, analysable, loader, scales, consumers, chosen_device, progress)
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


def _analyze_spatial(
    trained: Trained, units: Mapping[str, nn.Module], out: Path, samples: Sequence[int] | None,
    limit: int | None, batch_size: int, workers: int | None, device: str, progress: bool,
    command: str | None,
) -> dict[str, Any]:
    """:func:`analyze` for LSK units: their share of the larger kernel on the object and on the
    background by true object size, at 1.0x (:mod:`sknet.analysis.spatial`)."""
    source = trained.source
    preprocessing = trained.preprocessing()
    size = preprocessing.input_size
    _validate([1.0], limit, batch_size, None, size)
    dataset = source.val_set(size, preprocessing)
    samples = _sample_indices(len(dataset), samples)
    chosen_device = pick_device(device)
    trained.model.to(chosen_device)
    sample_images, sample_labels = _read_samples(dataset, samples)
    loader, indices = _loader(trained, dataset, limit, batch_size, workers, chosen_device)
    heights = source.val_sizes[indices, 0]
    stats = SpatialStatistics(
        {name: contrast(item) for name, item in units.items()},
        size_bins(heights, source.val_size_grid), heights, source.val_boxes[indices], size,
    )
    consumers = [lambda attention, targets, skipped: stats.add_next(attention[0], skipped)]
    skipped = _stream(trained.model, units, loader, [1.0], consumers, chosen_device, progress)
    if not stats.regions[REGIONS[0]].count:
        raise UserError(f"--data {trained.data}: no validation image could be read")
    sample_attention = _forward_scales(trained.model, units, sample_images, [1.0], chosen_device)
    report = build_spatial_report(
        trained, units, stats, size, limit, skipped, command, sample_report(
            stats, sample_attention[0], source.val_boxes[samples], samples, sample_labels,
            source.class_names,
        ),
    )
    report["files"] = list(SPATIAL_FILES)
    write_spatial_tables(report, out)
    write_spatial_figures(report, sample_images, preprocessing, out)
    return report


def _loader(
    trained: Trained, dataset: Dataset, limit: int | None, batch_size: int, workers: int | None,
    device: torch.device,
) -> tuple[DataLoader, list[int]]:
    """The validation images to stream (``limit`` of them evenly spaced, if given) and their
    indices in the validation set."""
    indices = list(range(len(dataset)))
    if limit is not None and limit < len(dataset):
        indices = [index * len(dataset) // limit for index in range(limit)]
        dataset = Subset(dataset, indices)
    workers = default_workers(trained.source.loader_workers, workers)
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    return loader, indices


Consumer = Callable[[list[dict[str, torch.Tensor]], torch.Tensor, int], None]
"""What takes each batch's attention ``[scale][unit]``, its targets and how many files of it were
unreadable."""


def _stream(
    model: nn.Module,
    units: Mapping[str, nn.Module],
    loader: DataLoader,
    scales: Sequence[float],
    consumers: Sequence[Consumer],
    device: torch.device,
    progress: bool,
) -> list[str]:
    """Feed every batch's attention at every scale to each consumer, in loader order (which
    pairs the images with their recorded sizes); returns the unreadable files' paths."""
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
                for consumer in consumers:
                    consumer(attention, targets, len(unreadable))
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
    units: Mapping[str, nn.Module],
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

