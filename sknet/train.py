"""Training and evaluation with the paper's recipe (Section 4.1), from one CPU to torchrun.

:func:`train` runs SGD with the paper's defaults for the dataset family (:data:`RECIPES`), on one
process or under ``torchrun`` (DistributedDataParallel, one process per GPU, multi-node by
torchrun's own arguments), and writes into ``out``:

* ``config.yaml``: the resolved configuration (a valid ``--config`` file);
* ``last.pt``: everything needed to resume exactly (model, optimizer, scaler, epoch, step in the
  epoch, RNG states of every process, metrics so far), a plain dict loadable with
  ``torch.load(path, weights_only=True)``, the model's state dict under ``"model"``;
* ``best.safetensors`` + ``best.json``: the best epoch's weights in the released format
  (:mod:`sknet.models.pretrained`);
* ``metrics.csv`` (one row per epoch) and ``summary.json`` (best top-1/top-5 error, the command).

Every file is written atomically, so a run killed at any moment (even ``kill -9``) leaves the
last good checkpoint intact; ``resume=OUT/last.pt`` continues it and, on CPU, ends with the same
weights as an uninterrupted run (per-sample augmentation seeds, see :mod:`sknet.data`).
:func:`evaluate` measures released weights on a dataset at one or more centre-crop sizes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
import shlex
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset

from sknet.atomic import atomic_path, write_json, write_text
from sknet.data import EpochBatches, Source, collate, open_data
from sknet.models import create_model, get_entry
from sknet.models.pretrained import load_pretrained, load_state_into, save_pretrained, weight_paths

CHECKPOINT_FORMAT = "sknet-train-state"
CHECKPOINT_VERSION = 1
DEFAULT_MODELS = {"digits": "sknet_digits", "imagenet": "sknet50", "cifar": "sknet29"}
"""The model trained when ``--model`` is not given, per dataset family."""


@dataclass(frozen=True)
class Recipe:
    """The optimisation and augmentation defaults of one dataset family.

    ``lr`` is the learning rate at batch ``lr_batch``; other batch sizes scale it linearly.
    ``lr_milestones`` are fractions of the run after which the rate is multiplied by
    ``lr_gamma`` (0.3/0.6/0.9 of 100 epochs are the paper's epochs 30/60/90).
    """

    epochs: int
    batch_size: int
    lr: float
    lr_batch: int
    momentum: float
    weight_decay: float
    label_smoothing: float
    lr_milestones: tuple[float, ...]
    lr_gamma: float
    input_size: int
    eval_sizes: tuple[int, ...]
    min_scale: float


RECIPES: dict[str, Recipe] = {
    # Section 4.1: SGD momentum 0.9, batch 256, lr 0.1 / 10 every 30 of 100 epochs, wd 1e-4,
    # label smoothing, random-size crop 224 + flip, centre-crop evaluation at 224 and 320.
    "imagenet": Recipe(
        epochs=100, batch_size=256, lr=0.1, lr_batch=256, momentum=0.9, weight_decay=1e-4,
        label_smoothing=0.1, lr_milestones=(0.3, 0.6, 0.9), lr_gamma=0.1, input_size=224,
        eval_sizes=(224, 320), min_scale=0.08,
    ),
    # ResNeXt's CIFAR recipe (Table 5): 300 epochs, batch 128, lr 0.1 / 10 at 50% and 75%,
    # wd 5e-4, pad-4 crop + flip; no label smoothing.
    "cifar": Recipe(
        epochs=300, batch_size=128, lr=0.1, lr_batch=128, momentum=0.9, weight_decay=5e-4,
        label_smoothing=0.0, lr_milestones=(0.5, 0.75), lr_gamma=0.1, input_size=32,
        eval_sizes=(32,), min_scale=1.0,
    ),
    # Ours, for the README's main job: the paper's optimiser, schedule shape and label smoothing,
    # sized to finish in minutes on 2 CPU cores.
    "digits": Recipe(
        epochs=15, batch_size=64, lr=0.1, lr_batch=64, momentum=0.9, weight_decay=1e-4,
        label_smoothing=0.1, lr_milestones=(0.3, 0.6, 0.9), lr_gamma=0.1, input_size=16,
        eval_sizes=(16,), min_scale=1.0,
    ),
}

LIGHTWEIGHT = {"weight_decay": 4e-5, "min_scale": 0.25}
"""Section 4.1 for lightweight models (ShuffleNetV2, Table 4): weight decay 4e-5 and "slightly
less aggressive scale augmentation"; the paper gives no number for the latter, we use 25%."""


def is_lightweight(model: str) -> bool:
    """Whether the registry marks ``model`` lightweight (ShuffleNet-class); ``False`` if unset."""
    return bool(getattr(get_entry(model), "lightweight", False))


def recipe_for(kind: str, model: str) -> Recipe:
    """The default recipe for dataset family ``kind`` and registered ``model``."""
    recipe = RECIPES[kind]
    return replace(recipe, **LIGHTWEIGHT) if is_lightweight(model) else recipe


def milestone_epochs(epochs: int, fractions: Sequence[float]) -> list[int]:
    """Epochs (0-based) from which each lr division applies: ``f * epochs`` rounded half up."""
    return [max(1, math.floor(fraction * epochs + 0.5)) for fraction in fractions]


def lr_at(epoch: int, config: TrainConfig) -> float:
    """Step schedule: ``lr * gamma ** (milestones passed)``."""
    passed = sum(epoch >= m for m in milestone_epochs(config.epochs, config.lr_milestones))
    return config.lr * config.lr_gamma**passed


@dataclass
class TrainConfig:
    """Everything a training run depends on; ``None`` fields take the recipe's default.

    Attributes:
        data: ``--data`` spec (see :func:`sknet.data.open_data`).
        model: registered model name (default per dataset: :data:`DEFAULT_MODELS`).
        model_kwargs: overrides of the model's registered config (e.g. ``{"attention": False}``).
        out: output directory.
        epochs, batch_size, lr, momentum, weight_decay, label_smoothing, lr_milestones, lr_gamma,
        input_size, eval_sizes, min_scale: the recipe (see :class:`Recipe`); ``batch_size`` is
            global (split over processes) and ``lr`` defaults to the recipe's, scaled linearly.
        seed: run seed (model init, shuffling, augmentation).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``.
        amp: autocast mixed precision with ``amp_dtype`` (``bf16`` or ``fp16``, the latter with a
            gradient scaler on CUDA).
        channels_last: NHWC memory format for the model and inputs.
        compile: ``torch.compile`` the training model.
        workers: data-loader processes per training process (default: 0 for in-memory data,
            else up to 8).
        sync_bn: SyncBatchNorm across processes (CUDA only).
        save_every: also write ``last.pt`` every this many steps within an epoch (0: only at
            epoch ends).
        strict: decode every image of a folder dataset up front and fail on any bad file.
        tensorboard: also log to ``out/tensorboard`` (needs the ``tensorboard`` package).
    """

    data: str = "digits"
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/train"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    lr_milestones: list[float] | None = None
    lr_gamma: float | None = None
    input_size: int | None = None
    eval_sizes: list[int] | None = None
    min_scale: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "bf16"
    channels_last: bool = False
    compile: bool = False
    workers: int | None = None
    sync_bn: bool = False
    save_every: int = 1000
    strict: bool = False
    tensorboard: bool = False


CONFIG_FIELDS = [f.name for f in fields(TrainConfig)]


def _check_keys(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    cleaned = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(cleaned) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(CONFIG_FIELDS)}"
        )
    return cleaned


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Settings from a YAML ``--config`` file (keys as in :class:`TrainConfig`, ``-`` or ``_``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"--config {path}: not valid YAML ({error})".replace("\n", " ")) from None
    if not isinstance(values, dict):
        kind = type(values).__name__
        raise ValueError(f"--config {path}: expected a mapping of settings, got a {kind}")
    return _check_keys(values, f"--config {path}")


def resolve(config: TrainConfig, kind: str, model: str) -> TrainConfig:
    """Fill every unset recipe field from the dataset family's recipe, and validate."""
    recipe = recipe_for(kind, model)
    values = asdict(config)
    values["model"] = model
    for name in ("epochs", "batch_size", "momentum", "weight_decay", "label_smoothing",
                 "lr_milestones", "lr_gamma", "input_size", "min_scale"):
        if values[name] is None:
            values[name] = getattr(recipe, name)
    if values["eval_sizes"] is None:
        sizes = [values["input_size"] if s == recipe.input_size else s for s in recipe.eval_sizes]
        values["eval_sizes"] = list(dict.fromkeys(sizes))
    if values["lr"] is None:
        values["lr"] = recipe.lr * values["batch_size"] / recipe.lr_batch
    values["lr_milestones"] = [float(v) for v in values["lr_milestones"]]
    values["eval_sizes"] = [int(v) for v in values["eval_sizes"]]
    resolved = TrainConfig(**values)
    problems = [
        message
        for bad, message in (
            (resolved.epochs < 1, f"epochs must be >= 1, got {resolved.epochs}"),
            (resolved.batch_size < 2, f"batch size must be >= 2, got {resolved.batch_size}"),
            (not resolved.lr > 0, f"lr must be > 0, got {resolved.lr}"),
            (not 0 <= resolved.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (
                not all(0 < m <= 1 for m in resolved.lr_milestones),
                "lr milestones are fractions of the run, in (0, 1]",
            ),
            (resolved.input_size < 8, f"input size must be >= 8, got {resolved.input_size}"),
            (not 0 < resolved.min_scale <= 1, "min scale must be in (0, 1]"),
            (resolved.amp_dtype not in ("bf16", "fp16"), "amp dtype must be bf16 or fp16"),
            (resolved.save_every < 0, "save-every must be >= 0"),
        )
        if bad
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return resolved


# ---------------------------------------------------------------------------------------------
# processes and devices


@dataclass(frozen=True)
class Processes:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA if present), ``cpu``, ``cuda`` (this process's local GPU) or ``cuda:N``."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available; use --device cpu")
    chosen = torch.device(device if ":" in device else f"cuda:{local_rank}")
    torch.cuda.set_device(chosen)
    return chosen


def setup_processes(device: str) -> Processes:
    """Join torchrun's process group when launched by it (``WORLD_SIZE`` > 1); pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Processes(rank, world_size, local_rank, chosen)


def _all_sum(values: list[float], processes: Processes, device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if processes.world_size > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


# ---------------------------------------------------------------------------------------------
# checkpoints


def _rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def load_checkpoint(path: str | os.PathLike, flag: str = "--resume") -> dict[str, Any]:
    """Read a ``last.pt`` safely (``weights_only``); damaged or foreign files fail in one line.

    ``flag`` names the option the path came from, for the error messages.
    """
    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and EOF errors of a truncated or foreign file
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{where}: not a readable checkpoint (truncated or corrupt?): {message}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{where}: not an sknet training checkpoint (last.pt)")
    return state


# ---------------------------------------------------------------------------------------------
# the run


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last checkpoint is left as it was."""


def _topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[int, int]:
    top = logits.topk(k, dim=1).indices
    hits = top == targets[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


@torch.no_grad()
def measure(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    processes: Processes,
    channels_last: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1 and top-5 error (percent) over a loader's images, summed across processes."""
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
    top1, top5, count, skipped = _all_sum(sums, processes, device)
    if not count:
        raise ValueError("no validation image could be read")
    return {
        "top1_err": 100.0 * (1 - top1 / count),
        "top5_err": 100.0 * (1 - top5 / count),
        "images": int(count),
        "skipped": int(skipped),
        "skipped_paths": skipped_paths,  # this process's
    }


def _val_loader(
    source: Source, size: int, batch: int, workers: int, processes: Processes,
    preprocessing: Mapping[str, Any] | None = None,
):
    dataset = source.val_set(size, preprocessing)
    shard = Subset(dataset, range(processes.rank, len(dataset), processes.world_size))
    return DataLoader(
        shard, batch_size=batch, num_workers=workers, collate_fn=collate,
        pin_memory=processes.device.type == "cuda",
    )


def default_workers(source: Source) -> int:
    """Data-loader processes: none for in-memory digits, else up to 8 per training process."""
    if source.kind == "digits":
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 1) // local - 1))


class _Trainer:
    """One training run; :func:`train` builds it and calls :meth:`fit`."""

    def __init__(
        self,
        config: TrainConfig,
        source: Source,
        processes: Processes,
        state: dict[str, Any] | None,
        command: str,
    ) -> None:
        self.config = config
        self.source = source
        self.processes = processes
        self.command = command
        self.out = Path(config.out)
        self.device = processes.device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: autotune the convolutions

        self.model = self._build_model(state)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay,
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

        workers = default_workers(source) if config.workers is None else config.workers
        self.workers = workers
        train_set = source.train_set(config.input_size, config.min_scale)
        self.sampler = EpochBatches(
            len(train_set), config.batch_size, config.seed, processes.rank, processes.world_size
        )
        self.train_loader = DataLoader(
            train_set, batch_sampler=self.sampler,
            num_workers=workers, collate_fn=collate, persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",
        )
        self.per_process_batch = config.batch_size // processes.world_size
        self.val_loader = _val_loader(
            source, config.input_size, self.per_process_batch, workers, processes
        )

        self.epoch, self.step = 0, 0
        self.epoch_sums = [0.0, 0.0, 0.0]  # loss x images, images, seconds
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.skipped: set[str] = {item.path for item in source.skipped}
        if state is not None:
            self._restore(state)
        else:
            torch.manual_seed(config.seed + processes.rank)

    # -- setup ------------------------------------------------------------------------------

    def _build_model(self, state: dict[str, Any] | None) -> nn.Module:
        config = self.config
        kwargs = dict(config.model_kwargs)
        entry = get_entry(config.model)
        if self.source.channels != entry.config.get("in_chans", 3) and "in_chans" not in kwargs:
            kwargs["in_chans"] = self.source.channels
        classes = len(self.source.class_names)
        if state is not None:
            saved = state["model_config"]
            if saved["num_classes"] != classes:
                raise ValueError(
                    f"--resume: the checkpoint has {saved['num_classes']} classes but --data "
                    f"{config.data} has {classes}; resume on the data it was trained on"
                )
            if saved["name"] != config.model or dict(saved["kwargs"]) != kwargs:
                raise ValueError(
                    f"--resume: the checkpoint is of model {saved['name']!r} "
                    f"{dict(saved['kwargs']) or ''}, not {config.model!r} {kwargs or ''}; "
                    "resume with the same --model, --model-kwargs and --data, or start a new --out"
                )
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        model = create_model(config.model, num_classes=classes, **kwargs)
        if state is not None:
            load_state_into(model, state["model"], "--resume checkpoint")
        if config.sync_bn and self.processes.world_size > 1:
            if self.device.type != "cuda":
                raise ValueError("--sync-bn needs CUDA devices (SyncBatchNorm has no CPU kernel)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.epoch_sums = [float(v) for v in state["epoch_sums"]]
        if not self.processes.main:
            self.epoch_sums[0] = 0.0  # rank 0 carries the sum over every process
        self.history = list(state["history"])
        self.best = state["best"]
        self.skipped |= set(state["skipped"])
        rng = state["rng"]
        _set_rng_state(rng[self.processes.rank % len(rng)])

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.config.amp)

    # -- output -----------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.processes.main:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    def _checkpoint(self) -> None:
        """Write ``last.pt`` (rank 0) after checking that the state is finite."""
        # The epoch's loss so far, summed over processes, is kept by rank 0 only.
        loss_sum, = _all_sum([self.epoch_sums[0]], self.processes, self.device)
        if not math.isfinite(loss_sum):
            self._diverged("the training loss")
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self._diverged("the weights")
        rng = [_rng_state()]
        if self.processes.world_size > 1:
            rng = [None] * self.processes.world_size
            dist.all_gather_object(rng, _rng_state())
        if not self.processes.main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": asdict(self.config),
            "model_config": self.model.config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {
                "milestones": milestone_epochs(self.config.epochs, self.config.lr_milestones),
                "gamma": self.config.lr_gamma,
                "lr": lr_at(self.epoch, self.config),
            },
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "epoch_sums": [loss_sum, *self.epoch_sums[1:]],
            "history": self.history,
            "best": self.best,
            "skipped": sorted(self.skipped),
            "rng": rng,
            "world_size": self.processes.world_size,
        }
        with atomic_path(self.out / "last.pt") as temporary:
            torch.save(state, temporary)

    def _write_reports(self) -> None:
        if not self.processes.main:
            return
        columns = [
            "epoch", "lr", "train_loss", "val_top1_err", "val_top5_err", "img_per_s", "seconds"
        ]
        if self.history and "peak_mem_mib" in self.history[-1]:
            columns.append("peak_mem_mib")
        table = io.StringIO()
        writer = csv.DictWriter(table, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        write_text(self.out / "metrics.csv", table.getvalue())
        if self.skipped:
            write_text(self.out / "skipped_files.txt", "\n".join(sorted(self.skipped)) + "\n")
        write_json(self.out / "summary.json", self._summary())

    def _summary(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        best = self.best or {}
        return {
            "command": self.command,
            "model": self.config.model,
            "model_kwargs": self.model.config["kwargs"],
            "data": self.config.data,
            "params": sum(p.numel() for p in self.model.parameters()),
            "epochs_done": len(self.history),
            "epochs": self.config.epochs,
            "best_epoch": best.get("epoch"),
            "top1_err": best.get("val_top1_err"),
            "top5_err": best.get("val_top5_err"),
            "last_top1_err": self.history[-1]["val_top1_err"] if self.history else None,
            "last_top5_err": self.history[-1]["val_top5_err"] if self.history else None,
            "input_size": self.config.input_size,
            "eval": (final or {}).get("eval", {}),
            "train_seconds": sum(row["seconds"] for row in self.history),
            "device": (
                torch.cuda.get_device_name(self.device)
                if self.device.type == "cuda"
                else str(self.device)
            ),
            "processes": self.processes.world_size,
            "threads": torch.get_num_threads(),
            "skipped_files": len(self.skipped),
            "finished": final is not None,
        }

    def _save_best(self, row: dict[str, Any]) -> None:
        if self.best is not None and row["val_top1_err"] >= self.best["val_top1_err"]:
            return
        self.best = dict(row)
        if self.processes.main:
            save_pretrained(
                self.model, self.out / "best.safetensors",
                class_names=self.source.class_names,
                preprocessing=self.source.preprocessing(self.config.input_size),
                dataset=self.config.data, eval_sizes=self.config.eval_sizes,
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
        raise TrainingDiverged(
            f"training diverged: {what} became NaN/inf in epoch {self.epoch + 1} near step "
            f"{self.step}; {kept}; lower --lr (now {lr_at(self.epoch, self.config):g})"
        )

    def _gather_skipped(self, more: list[str]) -> None:
        """Add ``more`` unreadable files, and every other process's, to :attr:`skipped`."""
        self.skipped.update(more)
        if self.processes.world_size > 1:
            everyone: list[set[str] | None] = [None] * self.processes.world_size
            dist.all_gather_object(everyone, self.skipped)
            self.skipped = set().union(*everyone)

    def _share_buffers(self) -> None:
        """Give every process rank 0's BatchNorm statistics, the ones that get saved.

        DDP averages gradients but each process updates its running statistics from its own
        share of the batch; validating with rank 0's makes the error that of the saved weights.
        """
        if self.processes.world_size > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)

    def _check_finite(self, value: float, what: str) -> None:
        (value,) = _all_sum([value], self.processes, self.device)
        if not math.isfinite(value):
            self._diverged(what)

    def _batches(self, progress) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets, skipped in self.train_loader:
            for item in skipped:
                if item.path not in self.skipped:
                    self.skipped.add(item.path)
                    if self.processes.main:
                        progress.write(f"skipped {item.path}: {item.reason}", file=sys.stderr)
            yield images, targets

    def _train_epoch(self) -> None:
        from tqdm import tqdm

        config = self.config
        lr = lr_at(self.epoch, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.sampler.set_epoch(self.epoch, self.step)
        self.net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        loss_sum += self.epoch_sums[0]
        images_done, seconds = self.epoch_sums[1], self.epoch_sums[2]
        show = self.processes.main and sys.stderr.isatty()
        progress = tqdm(
            total=self.sampler.steps_per_epoch, initial=self.step, disable=not show,
            desc=f"epoch {self.epoch + 1}/{config.epochs}", leave=False, dynamic_ncols=True,
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
                self.step += 1
                progress.update()
                saving = config.save_every and self.step % config.save_every == 0
                if self.step % 10 == 0 or saving:
                    elapsed = seconds + time.perf_counter() - started
                    mean = loss_sum.item() / max(images_done / self.processes.world_size, 1)
                    progress.set_postfix(loss=f"{mean:.4f}", img_s=f"{images_done / elapsed:.0f}")
                    self._check_finite(mean, "the training loss")
                if saving and self.step < self.sampler.steps_per_epoch:
                    self.epoch_sums = [
                        loss_sum.item(), images_done, seconds + time.perf_counter() - started
                    ]
                    self._checkpoint()
        seconds += time.perf_counter() - started
        peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else None
        self._share_buffers()
        total_loss, = _all_sum([loss_sum.item()], self.processes, self.device)
        self._check_finite(total_loss, "the training loss")
        metrics = measure(
            self.model, self.val_loader, self.device, self.processes, config.channels_last,
            self.amp_dtype if config.amp else None,
        )
        self._gather_skipped(metrics["skipped_paths"])
        row = {
            "epoch": self.epoch + 1,
            "lr": lr,
            "train_loss": round(total_loss / images_done, 6),
            "val_top1_err": round(metrics["top1_err"], 4),
            "val_top5_err": round(metrics["top5_err"], 4),
            "img_per_s": round(images_done / seconds, 1),
            "seconds": round(seconds, 2),
        }
        if peak_mib is not None:
            row["peak_mem_mib"] = round(peak_mib)
        self.history.append(row)
        self._save_best(row)
        self.epoch, self.step = self.epoch + 1, 0
        self.epoch_sums = [0.0, 0.0, 0.0]
        self._checkpoint()
        self._write_reports()
        self.log(
            f"epoch {row['epoch']:>3}/{config.epochs}  lr {lr:.4g}  train loss "
            f"{row['train_loss']:.4f}  val top-1 err {row['val_top1_err']:.2f}%  top-5 err "
            f"{row['val_top5_err']:.2f}%  {row['img_per_s']:.0f} img/s  {row['seconds']:.1f} s"
            + (f"  peak GPU memory {peak_mib:,.0f} MiB" if peak_mib is not None else "")
        )
        if self.skipped:
            self.log(f"  {len(self.skipped)} unreadable file(s) skipped so far, listed in "
                     f"{self.out / 'skipped_files.txt'}")

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, then evaluate the best weights at every eval size."""
        writer = None
        if self.config.tensorboard and self.processes.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError(
                    "--tensorboard needs the tensorboard package: pip install tensorboard"
                ) from None
            writer = SummaryWriter(str(self.out / "tensorboard"))
        if self.processes.main:
            import yaml

            settings = yaml.safe_dump(asdict(self.config), sort_keys=False)
            write_text(self.out / "config.yaml", settings)
            if self.source.skipped:
                self.log(f"left out {len(self.source.skipped)} file(s) that are not images or are "
                         f"empty, e.g. {self.source.skipped[0].path}; list in "
                         f"{self.out / 'skipped_files.txt'}")
            params = sum(p.numel() for p in self.model.parameters())
            self.log(
                f"training {self.config.model} ({params:,} parameters) on {self.config.data} "
                f"({len(self.source.class_names)} classes) for {self.config.epochs} epochs, batch "
                f"{self.config.batch_size}, lr {self.config.lr:g}, {self.processes.world_size} "
                f"process(es) on {self.device}; writing to {self.out}"
            )
        while self.epoch < self.config.epochs:
            self._train_epoch()
            if writer is not None:
                row = self.history[-1]
                for key in ("lr", "train_loss", "val_top1_err", "val_top5_err", "img_per_s"):
                    writer.add_scalar(key, row[key], row["epoch"])
        if writer is not None:
            writer.close()
        final = {"eval": self._final_eval()}
        summary = self._summary(final)
        if self.processes.main:
            write_json(self.out / "summary.json", summary)
            self.log(
                f"best: epoch {summary['best_epoch']}, val top-1 err {summary['top1_err']:.2f}%, "
                f"top-5 err {summary['top5_err']:.2f}% ({self.out / 'best.safetensors'})"
            )
        return summary

    def _final_eval(self) -> dict[str, dict[str, float]]:
        """The best weights at each evaluation size (the training size reuses the best epoch)."""
        assert self.best is not None
        results = {}
        best_state = None
        for size in self.config.eval_sizes:
            if size == self.config.input_size:
                results[str(size)] = {
                    "top1_err": self.best["val_top1_err"], "top5_err": self.best["val_top5_err"]
                }
                continue
            if best_state is None:
                best_state = load_pretrained(self.out / "best.safetensors").state_dict()
                self.model.load_state_dict(best_state)
            loader = _val_loader(
                self.source, size, self.per_process_batch, self.workers, self.processes
            )
            metrics = measure(
                self.model, loader, self.device, self.processes, self.config.channels_last
            )
            results[str(size)] = {key: round(metrics[key], 4) for key in ("top1_err", "top5_err")}
            self.log(f"best weights at {size}x{size}: top-1 err {metrics['top1_err']:.2f}%, "
                     f"top-5 err {metrics['top5_err']:.2f}%")
        return results


def _configure(
    overrides: Mapping[str, Any], config_file: str | os.PathLike | None,
    resume: str | os.PathLike | None,
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Layer the settings: defaults < checkpoint (resume) < YAML file < explicit overrides."""
    values = asdict(TrainConfig())
    state = None
    if resume is not None:
        state = load_checkpoint(resume)
        values.update(state["config"])
        values["out"] = str(Path(resume).parent)
    if config_file is not None:
        values.update(load_config_file(config_file))
    values.update(_check_keys(overrides, "train"))
    return TrainConfig(**values), state


def train(
    *,
    config_file: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    command: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a model with the paper's recipe; the Python face of ``sknet train``.

    Args:
        config_file: YAML file of :class:`TrainConfig` settings (defaults that ``overrides`` beat).
        resume: a ``last.pt`` to continue; its settings are the defaults and ``out`` is its folder.
        command: what to record as the command that made the run (the CLI passes its argv).
        **overrides: :class:`TrainConfig` fields, e.g. ``data="digits", out="runs/d", epochs=5``.

    Returns:
        The run summary (also ``out/summary.json``): ``top1_err``/``top5_err`` (percent) of the best
        epoch, ``eval`` per evaluation size, timings.

    Example:
        >>> from sknet.train import train
        >>> summary = train(data="digits", out="runs/digits")  # doctest: +SKIP
    """
    config, state = _configure(overrides, config_file, resume)
    source = open_data(config.data, strict=config.strict)
    model = config.model or DEFAULT_MODELS[source.kind]
    get_entry(model)  # an unknown name fails here, with suggestions
    config = resolve(config, source.kind, model)
    out = Path(config.out)
    if state is None and (out / "last.pt").exists():
        raise ValueError(
            f"{out} already holds a run (last.pt); continue it with --resume {out / 'last.pt'} "
            "or choose another --out"
        )
    processes = setup_processes(config.device)
    if command is None:
        shown = ", ".join(f"{key}={value!r}" for key, value in overrides.items())
        command = f"sknet.train({shown})"
    try:
        return _Trainer(config, source, processes, state, command).fit()
    finally:
        if processes.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class Trained:
    """A trained network ready for evaluation, and the dataset it is to be fed.

    Attributes:
        path: the file read (``best.safetensors``, ``model.safetensors``, ``X.safetensors`` or
            ``last.pt``).
        model: the network on the CPU, in eval mode.
        record: what was saved with it: ``model``, ``num_classes``, ``class_names`` (may be
            empty), ``preprocessing`` (at least ``input_size``), ``dataset``, ``eval_sizes``.
        data: the ``--data`` spec in use.
        source: that dataset, opened.
    """

    path: Path
    model: nn.Module
    record: dict[str, Any]
    data: str
    source: Source

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        """The recorded preprocessing that evaluation follows on image folders (e.g. imported
        timm weights'), or None where it is incomplete (a ``last.pt`` records only the size)."""
        recorded = self.record.get("preprocessing") or {}
        return dict(recorded) if {"input_size", "mean", "std"} <= set(recorded) else None


WEIGHTS_HELP = (
    "pass a training --out folder, a folder with model.safetensors + config.json, an "
    "X.safetensors file or a training last.pt"
)


def _from_checkpoint(path: Path, flag: str) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a ``last.pt`` and a record shaped like a weights config."""
    state = load_checkpoint(path, flag)
    saved, settings = state["model_config"], state["config"]
    model = create_model(
        saved["name"], num_classes=int(saved["num_classes"]), **dict(saved["kwargs"])
    )
    load_state_into(model, state["model"], path)
    record = {
        "model": saved["name"], "kwargs": dict(saved["kwargs"]),
        "num_classes": int(saved["num_classes"]), "class_names": [],
        "preprocessing": {"input_size": int(settings["input_size"])},
        "dataset": settings["data"], "eval_sizes": list(settings["eval_sizes"]),
        "epoch": int(state["epoch"]), "step": int(state["step"]),
    }
    return model, record


def load_trained(
    weights: str | os.PathLike, flag: str = ""
) -> tuple[Path, nn.Module, dict[str, Any]]:
    """Load trained weights for inference (``eval``, ``analyze``, ``export``, ``predict``).

    Args:
        weights: a training ``out`` folder (its ``best.safetensors``, else its ``last.pt``), a
            folder with ``model.safetensors`` + ``config.json``, an ``X.safetensors`` file, or a
            training ``last.pt``.
        flag: the option ``weights`` came from (e.g. ``--checkpoint``), for error messages.

    Returns:
        ``(path, model, record)``: the file read, the network on the CPU in eval mode, and what
        was saved with it (see :class:`Trained`).

    Raises:
        FileNotFoundError: nothing loadable at ``weights``.
        ValueError: unreadable or foreign files.
    """
    path = Path(weights)
    if path.is_dir():
        for name in ("best.safetensors", "model.safetensors", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
    if path.suffix == ".pt":
        model, record = _from_checkpoint(path, flag)
    else:
        if not path.exists() or not weight_paths(path)[0].exists():
            where = f"{flag} {weights}" if flag else str(weights)
            raise FileNotFoundError(f"{where}: no weights there; {WEIGHTS_HELP}")
        model = load_pretrained(path)
        record = model.pretrained_config
    return path, model.eval(), record


def open_trained(
    weights: str | os.PathLike, data: str | None = None, flag: str = ""
) -> Trained:
    """Load trained weights and open the dataset to evaluate them on (``eval``, ``analyze``).

    Args:
        weights: anything :func:`load_trained` takes.
        data: ``--data`` spec (default: the dataset recorded with the weights).
        flag: the option ``weights`` came from (e.g. ``--checkpoint``), for error messages.

    Raises:
        FileNotFoundError: nothing loadable at ``weights``.
        ValueError: unreadable files, or a dataset whose classes differ from the classifier's.
    """
    path, model, record = load_trained(weights, flag)
    data = data or record.get("dataset")
    if not data:
        raise ValueError(f"{path}: the weights do not record their dataset; pass --data")
    source = open_data(data, for_training=False)
    names = list(record.get("class_names") or [])
    if names == [str(index) for index in range(len(names))]:
        names = []  # the placeholder names of weights saved without any (e.g. a bare timm file)
    if len(source.class_names) != record["num_classes"]:
        raise ValueError(
            f"{path} classifies {record['num_classes']} classes but --data {data} has "
            f"{len(source.class_names)}; use the dataset it was trained on"
        )
    if names and names != source.class_names:
        raise ValueError(
            f"{path}: its class names ({', '.join(names[:3])}, ...) differ from those of --data "
            f"{data} ({', '.join(source.class_names[:3])}, ...)"
        )
    return Trained(path, model, record, data, source)


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
        weights: anything :func:`open_trained` takes (a training ``out`` folder, a weights
            folder, ``X.safetensors``, ``last.pt``).
        data: ``--data`` spec (default: the dataset recorded with the weights).
        sizes: evaluation sizes (default: those recorded, else the training input size).

    Returns:
        ``{"weights", "model", "data", "results": {size: {"top1_err", "top5_err", "images",
        "skipped"}}}``.
    """
    trained = open_trained(weights, data)
    record = trained.record
    sizes = list(sizes or record.get("eval_sizes") or [record["preprocessing"]["input_size"]])
    processes = Processes(0, 1, 0, pick_device(device))
    model = trained.model.to(processes.device)
    workers = default_workers(trained.source) if workers is None else workers
    results = {}
    for size in sizes:
        loader = _val_loader(
            trained.source, size, batch_size, workers, processes, trained.preprocessing
        )
        results[str(size)] = measure(model, loader, processes.device, processes)
    return {
        "weights": str(trained.path), "model": record["model"], "data": trained.data,
        "results": results,
    }


def format_command(argv: Sequence[str]) -> str:
    """The command line as a shell would take it back."""
    return shlex.join(["sknet", *argv])
