"""The resume state of a run: what ``last.pt`` holds beyond the model, and how it is restored.

The file's format (its version, the model record, atomic writing, safe reading) lives in
:mod:`sknet.models.resume_file`; here is what training puts in it: the model's state dict under
``"model"``, the optimizer and gradient scaler, the learning-rate schedule, the position in the
run (:class:`Progress`), every process's RNG states and the settings.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sknet.errors import UserError
from sknet.models.resume_file import write_checkpoint
from sknet.models.weights_io import model_record
from sknet.training.config import ResolvedConfig, TrainConfig, lr_at, schedule


@dataclass
class Progress:
    """Where a run stands: the next batch, the epoch's sums so far, and what came before.

    Attributes:
        epoch: the epoch in progress (0-based).
        step: its next batch.
        epoch_sums: this epoch's loss x images (summed over processes on rank 0), images and
            seconds so far.
        history: one metrics row per finished epoch.
        best: the row of the best epoch so far.
        skipped: unreadable files met so far.
    """

    epoch: int = 0
    step: int = 0
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    skipped: set[str] = field(default_factory=set)

    @classmethod
    def restored(cls, state: Mapping[str, Any], main: bool) -> Progress:
        """The progress saved in a checkpoint, as this process (``main``: rank 0) continues it."""
        sums = [float(value) for value in state["epoch_sums"]]
        if not main:
            sums[0] = 0.0  # rank 0 carries the sum over every process
        return cls(
            int(state["epoch"]), int(state["step"]), sums, list(state["history"]), state["best"],
            set(state["skipped"]),
        )


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, numpy and python RNG states, as plain tensors and lists."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _schedule_record(config: ResolvedConfig, epoch: int) -> dict[str, Any]:
    return {"milestones": schedule(config), "gamma": config.lr_gamma, "lr": lr_at(epoch, config)}


def save_checkpoint(
    path: Path,
    config: ResolvedConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    rng: list[dict[str, Any]],
    run_id: str | None = None,
) -> None:
    """Write ``last.pt`` atomically with ``model``'s record; ``rng`` holds every process's
    :func:`rng_state` (their number is the run's ``world_size``), ``run_id`` the run's id
    (:mod:`sknet.training.run_folder`)."""
    write_checkpoint(path, model_record(model), {
        "run_id": run_id,
        "config": asdict(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": _schedule_record(config, progress.epoch),
        "scaler": scaler.state_dict(),
        "epoch": progress.epoch,
        "step": progress.step,
        "epoch_sums": progress.epoch_sums,
        "history": progress.history,
        "best": progress.best,
        "skipped": sorted(progress.skipped),
        "rng": rng,
        "world_size": len(rng),
    })


FIXED_ON_RESUME = {"freeze": None, "backbone_lr_scale": 1.0, "pretrained": None}
"""Settings that shape the optimizer's parameter groups or the network: a resumed run keeps the
checkpoint's (the defaults stand for checkpoints written before the setting existed)."""


def _data_key(spec: str) -> str:
    """A ``--data`` spec with its path made absolute (``./x`` and ``x`` name one folder)."""
    scheme, separator, rest = spec.partition(":")
    if separator and scheme in ("cifar10", "cifar100"):
        return f"{scheme}:{os.path.abspath(rest)}"
    return os.path.abspath(spec) if os.sep in spec or spec.startswith(".") else spec


def same_data(before: str, now: str) -> bool:
    """Whether two ``--data`` specs name the same dataset and split (the same spec, paths
    compared as absolute paths)."""
    return _data_key(before) == _data_key(now)


def check_resumable(saved: Mapping[str, Any], config: TrainConfig) -> None:
    """Refuse, in one line, flags that change what a checkpoint's optimizer state fits."""
    for name, default in FIXED_ON_RESUME.items():
        before, now = saved.get(name, default), getattr(config, name)
        if before != now:
            flag = "--" + name.replace("_", "-")
            raise UserError(
                f"--resume: the run was trained with {flag} {before}, not {now}; resume "
                f"without {flag} (it is the checkpoint's), or start a new --out"
            )


def resume_changes(state: Mapping[str, Any], config: ResolvedConfig, world_size: int) -> list[str]:
    """What makes a resumed run differ from the uninterrupted one: a changed learning-rate
    schedule (:func:`schedule_change`) or another number of processes (each keeps its own
    BatchNorm statistics, so the global batches are the same but the weights drift)."""
    changes = []
    schedule = schedule_change(state, config)
    if schedule:
        changes.append(f"a changed learning-rate schedule: {schedule}")
    saved = int(state["world_size"])
    if saved != world_size:
        changes.append(f"{world_size} process(es) where {saved} saved it")
    synced = bool(state["config"].get("sync_bn", False))
    if synced != config.sync_bn:
        changes.append(f"--sync-bn {'on' if config.sync_bn else 'off'} where the run had it "
                       f"{'on' if synced else 'off'}")
    return changes


def schedule_change(state: Mapping[str, Any], config: ResolvedConfig) -> str | None:
    """How ``config`` changes the checkpoint's learning-rate schedule, or ``None``.

    A resumed run repeats the uninterrupted one only under the schedule it was saved with; a
    changed ``--epochs``, ``--lr``, ``--lr-milestones`` or ``--lr-gamma`` makes another run
    (sometimes wanted: to extend a run, or to provoke a failure), which the log says.
    """
    saved = dict(state["scheduler"])
    now = _schedule_record(config, int(state["epoch"]))
    if saved == now:
        return None
    return ", ".join(
        f"{key} {saved.get(key)} -> {now[key]}" for key in now if saved.get(key) != now[key]
    )
