"""Top-1 and top-5 error of a network by centre crop (Section 4.1), over one or many processes.

:func:`evaluate` is ``sknet eval``: trained weights (anything :mod:`sknet.trained` reads) on a
dataset at one or more crop sizes. :func:`measure` is the loop it shares with training's
per-epoch validation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from sknet.data import Source, collate
from sknet.devices import Processes, all_sum, default_workers, single_process
from sknet.errors import UserError
from sknet.preprocessing import Preprocessing, check_size
from sknet.trained import open_trained


def errors_text(top1: float, top5: float, classes: int) -> str:
    """``top-1 err X%``, and with more than five classes (where it says something) the top-5."""
    text = f"top-1 err {top1:.2f}%"
    return text + (f", top-5 err {top5:.2f}%" if classes > 5 else "")


def _topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[int, int]:
    top = logits.topk(k, dim=1).indices
    hits = top == targets[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


@torch.no_grad()
def measure(
    model: nn.Module,
    loader: DataLoader,
    processes: Processes,
    channels_last: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Top-1 and top-5 error (percent) over a loader's images, summed across processes.

    Returns:
        ``top1_err``, ``top5_err``, ``images``, ``skipped`` (counts over every process) and
        ``skipped_paths`` (this process's unreadable files).
    """
    device = processes.device
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # top-1 correct, top-5 correct, images, skipped
    skipped_paths: list[str] = []
    for images, targets, skipped in loader:
        sums[3] += len(skipped)
        skipped_paths.extend(item.path for item in skipped)
        if not len(images):
            continue
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).float()
        top1, top5 = _topk_correct(logits.cpu(), targets, min(5, logits.shape[1]))
        sums[0] += top1
        sums[1] += top5
        sums[2] += len(targets)
    model.train(was_training)
    top1, top5, count, skipped = all_sum(sums, processes)
    if not count:
        raise UserError("no validation image could be read")
    return {
        "top1_err": 100.0 * (1 - top1 / count),
        "top5_err": 100.0 * (1 - top5 / count),
        "images": int(count),
        "skipped": int(skipped),
        "skipped_paths": skipped_paths,
    }


def val_loader(
    source: Source, size: int, batch: int, workers: int, processes: Processes,
    preprocessing: Preprocessing,
) -> DataLoader:
    """This process's share of the validation images, prepared for evaluation at ``size`` as the
    resolved ``preprocessing`` says."""
    dataset = source.val_set(size, preprocessing)
    shard = Subset(dataset, range(processes.rank, len(dataset), processes.world_size))
    return DataLoader(
        shard, batch_size=batch, num_workers=workers, collate_fn=collate,
        pin_memory=processes.device.type == "cuda",
    )


def evaluate(
    weights: str | os.PathLike,
    data: str | None = None,
    sizes: Sequence[int] | None = None,
    *,
    batch_size: int = 256,
    device: str = "auto",
    workers: int | None = None,
) -> dict[str, Any]:
    """Top-1/top-5 error of trained weights, by centre crop at each size (Section 4.1).

    Args:
        weights: anything :func:`~sknet.trained.open_trained` takes (a training ``out`` folder,
            a weights folder, ``X.safetensors``, ``last.pt``).
        data: ``--data`` spec (default: the dataset recorded with the weights).
        sizes: evaluation sizes (default: those recorded, else the training input size).
        batch_size: images per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        workers: data-loader processes (default: none for in-memory data, else up to 8).

    Returns:
        ``{"weights", "model", "data", "results": {size: {"top1_err", "top5_err", "images",
        "skipped"}}}``.
    """
    for size in sizes or ():
        check_size(size, "--sizes")
    trained = open_trained(weights, data, flag="--checkpoint")
    record = trained.record
    sizes = list(sizes or record.extra.get("eval_sizes") or [trained.input_size])
    processes = single_process(device)
    model = trained.model.to(processes.device)
    workers = default_workers(trained.source.loader_workers, workers)
    results = {}
    for size in sizes:
        loader = val_loader(
            trained.source, size, batch_size, workers, processes, trained.preprocessing(size)
        )
        results[str(size)] = measure(model, loader, processes)
    return {
        "weights": str(trained.path), "model": record.name, "data": trained.data,
        "classes": record.num_classes, "results": results,
    }
