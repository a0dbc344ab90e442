"""What a run writes for people: ``config.yaml``, ``metrics.csv``, ``summary.json``,
``skipped_files.txt`` and (optionally) TensorBoard scalars. Every file is written atomically."""

from __future__ import annotations

import csv
import io
import subprocess
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from sknet.atomic import printable, write_json, write_text
from sknet.devices import Processes
from sknet.errors import UserError
from sknet.training.checkpoint import Progress
from sknet.training.config import ResolvedConfig, lr_at, schedule
from sknet.training.run_folder import CONFIG_HEADER

METRICS = ["epoch", "lr", "train_loss", "val_top1_err", "val_top5_err", "img_per_s", "seconds"]
"""Columns of ``metrics.csv`` (and ``peak_mem_mib`` on CUDA)."""
SCALARS = ("lr", "train_loss", "val_top1_err", "val_top5_err", "img_per_s")
"""The metrics logged to TensorBoard per epoch."""


PROGRESS_SECONDS = 60.0
"""When stderr is not a terminal (a log file, a cluster job), a progress line this often."""


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def schedule_text(config: ResolvedConfig) -> str:
    """The learning rate by epoch, e.g. ``lr 0.1 (epochs 1-7), 0.01 (epochs 8-11), ...``, and
    a warning where a run is too short to keep the schedule's divisions apart."""
    rates = [lr_at(epoch, config) for epoch in range(config.epochs)]
    parts, first = [], 0
    for epoch in range(1, config.epochs + 1):
        if epoch == config.epochs or rates[epoch] != rates[first]:
            span = f"epoch {first + 1}" if epoch - first == 1 else f"epochs {first + 1}-{epoch}"
            parts.append(f"{rates[first]:g} ({span})")
            first = epoch
    text = "lr " + ", ".join(parts)
    milestones = schedule(config)
    if len(set(milestones)) < len(milestones):
        text += (
            f"; {plural(config.epochs, 'epoch')}: too few to keep the schedule's divisions (at "
            f"{', '.join(f'{m:g}' for m in config.lr_milestones)} of the run) apart, several "
            "fall on one epoch"
        )
    return text


class ProgressLines:
    """A line with the step, the loss, img/s and the epoch's remaining time every
    :data:`PROGRESS_SECONDS`, for logs that are not a terminal (which show a progress bar)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = time.perf_counter()

    def line(
        self, epoch: str, step: int, steps: int, batch: int, loss: float, images_per_s: float
    ) -> str:
        """The line due now (``epoch`` as ``3/15``, ``batch`` global images a step), or ``""``."""
        now = time.perf_counter()
        if not self.enabled or now - self.last < PROGRESS_SECONDS or images_per_s <= 0:
            return ""
        self.last = now
        left = (steps - step) * batch / images_per_s
        return (
            f"epoch {epoch}: step {step}/{steps}, loss {loss:.4f}, {images_per_s:.0f} img/s, "
            f"the epoch's steps done in about {left:.0f} s"
        )


def code_version() -> str:
    """sknet's version, with the git commit of its checkout where it runs from one."""
    try:
        version = metadata.version("sknet")
    except metadata.PackageNotFoundError:
        version = "unknown"
    folder = Path(__file__).resolve().parents[2]
    if (folder / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True,
                text=True, timeout=10, check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):  # no git here
            commit = ""
        if commit:
            return f"{version} (git {commit})"
    return version


def write_settings(out: Path, config: ResolvedConfig, run_id: str) -> None:
    """``config.yaml``: the resolved settings, a valid ``--config`` file, under a comment that
    names the run (:mod:`sknet.training.run_folder`)."""
    header = CONFIG_HEADER.format(run_id=run_id)
    write_text(out / "config.yaml", header + yaml.safe_dump(asdict(config), sort_keys=False))


def summary(
    config: ResolvedConfig,
    model: nn.Module,
    progress: Progress,
    processes: Processes,
    command: str,
    final: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The run's summary: best and last errors, timings, where it ran, the run's id;
    ``finished`` once the final evaluation (``final``) is in."""
    best = progress.best or {}
    history = progress.history
    device = processes.device
    return {
        "run_id": run_id,
        "command": command,
        "model": config.model,
        "model_kwargs": dict(model.record.kwargs),
        "data": config.data,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs_done": len(history),
        "epochs": config.epochs,
        "best_epoch": best.get("epoch"),
        "top1_err": best.get("val_top1_err"),
        "top5_err": best.get("val_top5_err"),
        "last_top1_err": history[-1]["val_top1_err"] if history else None,
        "last_top5_err": history[-1]["val_top5_err"] if history else None,
        "input_size": config.input_size,
        "eval": (final or {}).get("eval", {}),
        "train_seconds": sum(row["seconds"] for row in history),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "processes": processes.world_size,
        "threads": torch.get_num_threads(),
        "skipped_files": len(progress.skipped),
        "finished": final is not None,
    }


def write(out: Path, progress: Progress, run_summary: dict[str, Any]) -> None:
    """``metrics.csv`` (one row per epoch), ``skipped_files.txt`` (if any) and ``summary.json``."""
    columns = list(METRICS)
    if progress.history and "peak_mem_mib" in progress.history[-1]:
        columns.append("peak_mem_mib")
    table = io.StringIO()
    writer = csv.DictWriter(table, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(progress.history)
    write_text(out / "metrics.csv", table.getvalue())
    if progress.skipped:  # file names of any encoding, as the log lines show them
        names = sorted(printable(path) for path in progress.skipped)
        write_text(out / "skipped_files.txt", "\n".join(names) + "\n")
    write_json(out / "summary.json", run_summary)


def tensorboard(out: Path) -> Any:
    """A TensorBoard writer into ``out/tensorboard``; the package is optional."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter(str(out / "tensorboard"))


def log_scalars(writer: Any, row: dict[str, Any]) -> None:
    """One epoch's metrics row as TensorBoard scalars."""
    for key in SCALARS:
        writer.add_scalar(key, row[key], row["epoch"])
