"""The training loop: :func:`train` builds a :class:`Trainer` from the settings and runs it.

One process or many under ``torchrun`` (DistributedDataParallel, one process per GPU): every
process draws the same global batches (:class:`~sknet.data.EpochBatches`) and takes its share;
rank 0 writes the files (:mod:`sknet.training.reports`, :mod:`sknet.training.checkpoint`). A run
resumed from ``last.pt`` continues where it stopped and, on CPU, ends with the same weights as an
uninterrupted one (per-sample augmentation seeds, saved RNG states).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from sknet.atomic import check_writable, printable
from sknet.data import open_data
from sknet.devices import (
    all_sum,
    broadcast_buffers,
    gather,
    setup_processes,
    teardown_processes,
    torch_threads,
)
from sknet.errors import UserError
from sknet.evaluation import errors_text, measure, val_loader
from sknet.models import get_entry
from sknet.models.resume_file import read_checkpoint
from sknet.models.weights_io import read_weights, write_weights
from sknet.training import reports
from sknet.training.checkpoint import (
    Progress,
    check_resumable,
    resume_changes,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sknet.training.config import layer, lr_at, resolve
from sknet.training.recipe import DEFAULT_MODELS
from sknet.training.run_folder import claim_folder, new_run_id
from sknet.training.run_lock import RunLock
from sknet.training.setup import RunStart, make_loaders, prepare_model
from sknet.training.signals import RunStopped, StopSignals, stop_message
from sknet.training.transfer import (
    freeze,
    frozen_modules,
    keep_frozen,
    load_start,
    parameter_groups,
    starting_config,
)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last checkpoint is left as it was."""


class Trainer:
    """One training run; :func:`train` builds it and calls :meth:`fit`.

    Args:
        run: what the run starts from (:class:`~sknet.training.setup.RunStart`).
        run_id: the run's id (default: the checkpoint's, else a new one).
    """

    def __init__(self, run: RunStart, run_id: str | None = None) -> None:
        config, source, processes, state = run.config, run.source, run.processes, run.state
        self.config = config
        self.source = source
        self.processes = processes
        self.command = run.command
        self.out = Path(config.out)
        self.device = processes.device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: autotune the convolutions

        self.run_id = run_id or (state or {}).get("run_id") or new_run_id()
        self.stop = StopSignals()
        self.model, self.preprocessing, self.notes = prepare_model(run)
        self.frozen = frozen_modules(self.model, config.freeze)
        if self.frozen:
            count = freeze(self.frozen)
            self.notes.append(f"froze conv1-{config.freeze} ({count:,} parameters, BN statistics)")
        if config.backbone_lr_scale != 1.0:
            self.notes.append(
                f"the backbone learns at {config.backbone_lr_scale:g} x the classifier's lr"
            )
        self.optimizer = torch.optim.SGD(
            parameter_groups(self.model, config.backbone_lr_scale), lr=config.lr,
            momentum=config.momentum, weight_decay=config.weight_decay,
        )
        fp16 = config.amp and config.amp_dtype == "fp16"
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=fp16 and self.device.type == "cuda"
        )
        self.amp_dtype = torch.float16 if fp16 else torch.bfloat16
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.net: nn.Module = self.model
        if processes.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        if config.compile:
            self.net = torch.compile(self.net)

        self.loaders = make_loaders(config, source, processes, self.preprocessing)
        self.classes = len(source.class_names)
        self.progress = Progress(skipped={item.path for item in source.skipped})
        self.resume_notes: list[str] = []
        if state is not None:
            self._restore(state)
        else:
            torch.manual_seed(config.seed + processes.rank)

    # -- setup ------------------------------------------------------------------------------

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        skipped = self.progress.skipped
        self.progress = Progress.restored(state, self.processes.main)
        self.progress.skipped |= skipped
        self.resume_notes = resume_changes(state, self.config, self.processes.world_size)
        rng = state["rng"]
        set_rng_state(rng[self.processes.rank % len(rng)])

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.config.amp)

    # -- output -----------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.processes.main and message:
            tqdm.write(message, file=sys.stderr)

    def _checkpoint(self) -> None:
        """Write ``last.pt`` (rank 0) after checking that the state is finite."""
        progress = self.progress
        # The epoch's loss so far, summed over processes, is kept by rank 0 only.
        loss_sum, = all_sum([progress.epoch_sums[0]], self.processes)
        if not math.isfinite(loss_sum):
            self._diverged("the training loss")
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self._diverged("the weights")
        rng = gather(rng_state(), self.processes)
        if not self.processes.main:
            return
        saved = Progress(
            progress.epoch, progress.step, [loss_sum, *progress.epoch_sums[1:]],
            progress.history, progress.best, progress.skipped,
        )
        save_checkpoint(
            self.out / "last.pt", self.config, self.model, self.optimizer, self.scaler, saved, rng,
            self.run_id,
        )

    def _write_reports(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        summary = reports.summary(
            self.config, self.model, self.progress, self.processes, self.command, final,
            self.run_id,
        )
        if self.processes.main:
            reports.write(self.out, self.progress, summary)
        return summary

    def _save_best(self, row: dict[str, Any]) -> None:
        best = self.progress.best
        if best is not None and row["val_top1_err"] >= best["val_top1_err"]:
            return
        self.progress.best = dict(row)
        if self.processes.main:
            write_weights(
                self.model, self.out / "best.safetensors",
                epoch=row["epoch"], top1_err=row["val_top1_err"], top5_err=row["val_top5_err"],
            )

    # -- the loop ---------------------------------------------------------------------------

    def _diverged(self, what: str) -> None:
        last = self.out / "last.pt"
        kept = (
            f"{last} still holds the last good state"
            if last.exists()
            else "no checkpoint was written"
        )
        epoch = self.progress.epoch
        raise TrainingDiverged(
            f"training diverged: {what} became NaN/inf in epoch {epoch + 1} near step "
            f"{self.progress.step}; {kept}; lower --lr (now {lr_at(epoch, self.config):g})"
        )

    def _check_finite(self, value: float, what: str) -> None:
        (value,) = all_sum([value], self.processes)
        if not math.isfinite(value):
            self._diverged(what)

    def _batches(self, progress: tqdm) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets, skipped in self.loaders.train:
            for item in skipped:
                if item.path not in self.progress.skipped:
                    self.progress.skipped.add(item.path)
                    if self.processes.main:
                        progress.write(
                            printable(f"skipped {item.path}: {item.reason}"), file=sys.stderr
                        )
            if not len(targets):  # the loader serves an empty batch only when nothing reads
                raise UserError(
                    f"--data {self.config.data}: no training image can be read (every file "
                    "tried was skipped, as listed above); replace the damaged files"
                )
            yield images, targets

    def _train_epoch(self) -> None:
        config, state = self.config, self.progress
        lr = lr_at(state.epoch, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.loaders.sampler.set_epoch(state.epoch, state.step)
        self.net.train()
        keep_frozen(self.frozen)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        loss_sum += state.epoch_sums[0]
        images_done, seconds = state.epoch_sums[1], state.epoch_sums[2]
        show = self.processes.main and sys.stderr.isatty()
        lines = reports.ProgressLines(self.processes.main and not show)
        steps = self.loaders.sampler.steps_per_epoch
        progress = tqdm(
            total=self.loaders.sampler.steps_per_epoch, initial=state.step, disable=not show,
            desc=f"epoch {state.epoch + 1}/{config.epochs}", leave=False, dynamic_ncols=True,
        )
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        with progress:
            for images, targets in self._batches(progress):
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                if config.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    loss = self.criterion(self.net(images), targets)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                loss_sum += loss.detach().double() * len(targets)
                images_done += config.batch_size
                state.step += 1
                progress.update()
                saving = config.save_every and state.step % config.save_every == 0
                mid_epoch = state.step < self.loaders.sampler.steps_per_epoch
                stopping = self._stop_requested(state.step) if mid_epoch else None
                if state.step % 10 == 0 or saving:
                    elapsed = seconds + time.perf_counter() - started
                    mean = loss_sum.item() / max(images_done / self.processes.world_size, 1)
                    rate = images_done / elapsed
                    progress.set_postfix(loss=f"{mean:.4f}", img_s=f"{rate:.0f}")
                    self._check_finite(mean, "the training loss")
                    self.log(lines.line(f"{state.epoch + 1}/{config.epochs}", state.step, steps,
                                        config.batch_size, mean, rate))
                if (saving or stopping) and mid_epoch:
                    state.epoch_sums = [
                        loss_sum.item(), images_done, seconds + time.perf_counter() - started
                    ]
                    self._checkpoint()
                if stopping:
                    steps = self.loaders.sampler.steps_per_epoch
                    self._stopped(stopping, f"at epoch {state.epoch + 1}, step {state.step} of "
                                            f"{steps}")
        seconds += time.perf_counter() - started
        peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else None
        # Validate with rank 0's BatchNorm statistics: the error is then that of the saved weights.
        broadcast_buffers(self.model, self.processes)
        total_loss, = all_sum([loss_sum.item()], self.processes)
        self._check_finite(total_loss, "the training loss")
        metrics = measure(
            self.model, self.loaders.val, self.processes, config.channels_last,
            self.amp_dtype if config.amp else None,
        )
        self.progress.skipped.update(metrics["skipped_paths"])
        self.progress.skipped = set().union(*gather(self.progress.skipped, self.processes))
        row = {
            "epoch": state.epoch + 1,
            "lr": lr,
            "train_loss": round(total_loss / images_done, 6),
            "val_top1_err": round(metrics["top1_err"], 4),
            "val_top5_err": round(metrics["top5_err"], 4),
            "img_per_s": round(images_done / seconds, 1),
            "seconds": round(seconds, 2),
        }
        if peak_mib is not None:
            row["peak_mem_mib"] = round(peak_mib)
        state.history.append(row)
        self._save_best(row)
        state.epoch, state.step = state.epoch + 1, 0
        state.epoch_sums = [0.0, 0.0, 0.0]
        self._checkpoint()
        self._write_reports()
        self.log(
            f"epoch {row['epoch']:>3}/{config.epochs}  lr {lr:.4g}  train loss "
            f"{row['train_loss']:.4f}  val top-1 err {row['val_top1_err']:.2f}%"
            + (f"  top-5 err {row['val_top5_err']:.2f}%" if self.classes > 5 else "")
            + f"  {row['img_per_s']:.0f} img/s  {row['seconds']:.1f} s"
            + (f"  peak GPU memory {peak_mib:,.0f} MiB" if peak_mib is not None else "")
        )
        if state.skipped:
            self.log(f"  {len(state.skipped)} file(s) skipped so far (unreadable, not images, "
                     f"links to folders, ...), listed in {self.out / 'skipped_files.txt'}")

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, then evaluate the best weights at every eval size."""
        writer = reports.tensorboard(self.out) if (
            self.config.tensorboard and self.processes.main
        ) else None
        if self.processes.main:
            reports.write_settings(self.out, self.config, self.run_id)
            if self.source.skipped:
                first = self.source.skipped[0]
                self.log(f"left out {len(self.source.skipped)} path(s) that are not image files "
                         f"(not images, empty, links to folders, ...), e.g. "
                         f"{printable(first.path)} ({first.reason}); list in "
                         f"{self.out / 'skipped_files.txt'}")
            for note in self.resume_notes:
                self.log(f"resuming under {note}")
            for note in self.notes:
                self.log(note)
            params = sum(p.numel() for p in self.model.parameters())
            self.log(
                f"training {self.config.model} ({params:,} parameters) on {self.config.data} "
                f"({len(self.source.class_names)} classes) for "
                f"{reports.plural(self.config.epochs, 'epoch')}, batch {self.config.batch_size}, "
                f"{reports.schedule_text(self.config)}, "
                f"{reports.plural(self.processes.world_size, 'process')} of "
                f"{reports.plural(torch.get_num_threads(), 'thread')} on {self.device}; "
                f"writing to {self.out}"
            )
        try:
            with self.stop:  # SIGTERM, SIGINT: stop at the next step boundary, resumable
                while self.progress.epoch < self.config.epochs:
                    self._train_epoch()
                    if writer is not None:
                        reports.log_scalars(writer, self.progress.history[-1])
                    stopping = self.stop.agreed(self.processes)
                    if stopping:
                        self._stopped(stopping, f"after epoch {self.progress.epoch} of "
                                                f"{self.config.epochs}")
        finally:
            if writer is not None:
                writer.close()
        summary = self._write_reports({"eval": self._final_eval()})
        if self.processes.main:
            errors = errors_text(summary["top1_err"], summary["top5_err"], self.classes)
            self.log(f"best: epoch {summary['best_epoch']}, val {errors} "
                     f"({self.out / 'best.safetensors'})")
        return summary

    def _stop_requested(self, step: int) -> int | None:
        """The signal that stops every process after ``step`` (mid-epoch; the epoch's last step
        stops after the epoch-end checkpoint: :meth:`fit`). Agreed every step, or on GPUs,
        where it would make the host wait for the device, every 10 steps with the loss check."""
        every = 10 if self.processes.world_size > 1 and self.device.type != "cpu" else 1
        return self.stop.agreed(self.processes) if step % every == 0 else None

    def _stopped(self, signum: int, where: str) -> None:
        """End the run on a signal, ``last.pt`` just written: say how to resume."""
        message = stop_message(signum, where, str(self.out / "last.pt"), self.processes)
        self.log(message)
        raise RunStopped(message, signum)

    def _final_eval(self) -> dict[str, dict[str, float]]:
        """The best weights at each evaluation size (the training size reuses the best epoch)."""
        best = self.progress.best
        assert best is not None
        results = {}
        best_state = None
        for size in self.config.eval_sizes:
            if size == self.config.input_size:
                results[str(size)] = {
                    "top1_err": best["val_top1_err"], "top5_err": best["val_top5_err"]
                }
                continue
            if best_state is None:
                best_state = read_weights(self.out / "best.safetensors")
                self.model.load_state_dict(best_state)
            loader = val_loader(
                self.source, size, self.loaders.per_process_batch, self.loaders.workers,
                self.processes, self.preprocessing,
            )
            metrics = measure(self.model, loader, self.processes, self.config.channels_last)
            results[str(size)] = {key: round(metrics[key], 4) for key in ("top1_err", "top5_err")}
            errors = errors_text(metrics["top1_err"], metrics["top5_err"], self.classes)
            self.log(f"best weights at {size}x{size}: {errors}")
        return results


def train(
    *,
    config_file: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    command: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a model with the paper's recipe; the Python face of ``sknet train``.

    Args:
        config_file: YAML file of :class:`~sknet.training.config.TrainConfig` settings
            (defaults that ``overrides`` beat).
        resume: a ``last.pt`` to continue; its settings are the defaults and ``out`` is its folder.
        command: what to record as the command that made the run (the CLI passes its argv).
        **overrides: :class:`~sknet.training.config.TrainConfig` fields, e.g.
            ``data="digits", out="runs/d", epochs=5``.

    Returns:
        The run summary (also ``out/summary.json``): ``top1_err``/``top5_err`` (percent) of the best
        epoch, ``eval`` per evaluation size, timings.

    Example:
        >>> from sknet.training import train
        >>> summary = train(data="digits", out="runs/digits")  # doctest: +SKIP
    """
    state = None if resume is None else read_checkpoint(resume, f"--resume {resume}")
    config = layer(
        overrides, config_file, state and state["config"],
        str(Path(resume).parent) if resume is not None else None,
    )
    if state is not None:
        check_resumable(state["config"], config)
    check_writable(config.out, "--out", folder=True)
    source = open_data(config.data, strict=config.strict)
    config = replace(config, data=source.spec)  # canonical, a folder's path absolute
    start = None
    if config.pretrained is not None and state is None:
        start = load_start(config.pretrained)
        config = starting_config(start, config, source.kind)
    if config.input_size is None and source.native_size is not None:
        config = replace(config, input_size=source.native_size)
    model = config.model or DEFAULT_MODELS[source.kind]
    get_entry(model)  # an unknown name fails here, with suggestions
    config = resolve(config, source.kind, model, source.train_size)
    if command is None:
        shown = ", ".join(f"{key}={value!r}" for key, value in overrides.items())
        command = f"sknet.train({shown})"
    processes = setup_processes(config.device)
    lock = RunLock(config.out)  # one run per folder, held until the run ends
    benchmark = torch.backends.cudnn.benchmark  # the Trainer sets it on CUDA
    try:
        run_id = None if state is None else state.get("run_id")
        checkpoint = None if resume is None else Path(resume)
        notes = claim_folder(lock, command, run_id, checkpoint, processes)
        with torch_threads(config.threads):
            run = RunStart(config, source, processes, command, state, start, str(resume))
            trainer = Trainer(run, run_id)
            trainer.notes += notes
            return trainer.fit()
    finally:
        lock.release()
        torch.backends.cudnn.benchmark = benchmark
        teardown_processes(processes)
