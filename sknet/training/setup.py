"""What a run needs before its first step: the network (new, fine-tuned or resumed, checked
against the data), the preprocessing it is fed with, and the data loaders.

The network carries its :class:`~sknet.record.ModelRecord` from here on, with the dataset's
class names and the resolved preprocessing: ``best.json`` and ``last.pt`` record exactly that.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sknet.data import EpochBatches, Source, collate
from sknet.devices import Processes, default_workers
from sknet.errors import UserError
from sknet.evaluation import val_loader
from sknet.models.factory import build, from_record
from sknet.models.registry import get_entry
from sknet.preprocessing import Preprocessing, resolve_preprocessing
from sknet.record import ModelRecord
from sknet.training.checkpoint import same_data
from sknet.training.config import ResolvedConfig
from sknet.training.reports import code_version
from sknet.training.sync_bn import convert_sync_bn
from sknet.training.transfer import Start, adapt


def run_preprocessing(
    config: ResolvedConfig, source: Source, weights: Preprocessing | None
) -> Preprocessing:
    """The run's preprocessing: the dataset's default < the starting (or resumed) weights'
    record < ``--preprocessing``, at ``--input-size``."""
    return resolve_preprocessing(
        source.preprocessing(config.input_size), weights, config.preprocessing,
        size=config.input_size, channels=source.channels,
    )


def _check_resumed(
    state: dict[str, Any], config: ResolvedConfig, source: Source, kwargs: dict[str, Any],
    checkpoint: str,
) -> None:
    """A checkpoint resumes only on the data (classes and split) and network it was trained
    with."""
    record: ModelRecord = state["record"]
    if not record.classes_fit(source.class_names):
        raise UserError(
            f"--resume: the checkpoint was trained on {record.num_classes} classes "
            f"({', '.join((record.class_names or ('?',))[:3])}, ...) but --data {config.data} has "
            f"{len(source.class_names)} ({', '.join(source.class_names[:3])}, ...); resume on "
            "the data it was trained on, or fine-tune from it (--pretrained) into a new --out"
        )
    # A fine-tuning run's network is its weights' (their kwargs, adapted channels).
    expected = dict(record.kwargs) if config.pretrained else kwargs
    if record.name != config.model or dict(record.kwargs) != expected:
        raise UserError(
            f"--resume: the checkpoint is of model {record.name!r} {dict(record.kwargs) or ''}, "
            f"not {config.model!r} {kwargs or ''}; resume with the same --model, "
            "--model-kwargs and --data, or start a new --out"
        )
    # The same classes split otherwise (digits:0-4:10 after digits:0-4) is another run too.
    before = state["config"].get("data")
    if before is not None and not same_data(str(before), config.data):
        raise UserError(
            f"--resume: the run was trained on --data {before}, not {config.data}; resume on "
            f"the same --data, or fine-tune from it: --pretrained {checkpoint} --out NEW"
        )


@dataclass(frozen=True)
class RunStart:
    """What a run starts from.

    Attributes:
        config: the resolved settings.
        source: the opened dataset.
        processes: this process's place in the run.
        command: the command line to record.
        state: the checkpoint to resume from, if any.
        start: the weights to fine-tune from (not on resume: the checkpoint holds the model).
        resumed_from: where ``state`` was read (for messages).
    """

    config: ResolvedConfig
    source: Source
    processes: Processes
    command: str
    state: dict[str, Any] | None = None
    start: Start | None = None
    resumed_from: str = "last.pt"


def prepare_model(run: RunStart) -> tuple[nn.Module, Preprocessing, list[str]]:
    """The network to train, on its device, its preprocessing, and what the log should say.

    From ``run.state`` (a resumed ``last.pt``: its record and weights), from ``run.start``
    (fine-tuning) or new (He initialisation under the run's seed). The record says where the
    weights come from: the dataset, the evaluation sizes, the command and the code's version.
    With ``--sync-bn`` on several processes, its BatchNorms normalise over the global batch.
    """
    config, source, processes, state, start = (
        run.config, run.source, run.processes, run.state, run.start
    )
    kwargs = dict(config.model_kwargs)
    entry = get_entry(config.model)
    if source.channels != entry.config.get("in_chans", 3) and "in_chans" not in kwargs:
        kwargs["in_chans"] = source.channels
    notes: list[str] = []
    if state is not None:
        _check_resumed(state, config, source, kwargs, run.resumed_from)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if state is not None:
        record = state["record"]
        model = from_record(record, state["model"], "--resume checkpoint")
        weights = record.preprocessing
    elif start is not None:
        model, adapted = adapt(start, source.class_names, source.channels)
        notes += [f"fine-tuning {start.name} from {start.path}", *adapted]
        weights = start.record.preprocessing
    else:
        model = build(config.model, len(source.class_names), kwargs)
        weights = None
    preprocessing = run_preprocessing(config, source, weights)
    model.record = replace(
        model.record.with_classes(len(source.class_names), source.class_names),
        preprocessing=preprocessing,
        extra={
            "dataset": config.data, "eval_sizes": list(config.eval_sizes), "command": run.command,
            "sknet_version": code_version(),
        },
    )
    if config.sync_bn and processes.world_size > 1:
        if processes.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # nn.SyncBatchNorm runs on GPUs only
            model = convert_sync_bn(model)
        notes.append(f"--sync-bn: BatchNorm statistics over all {processes.world_size} processes")
    model.to(processes.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, preprocessing, notes


@dataclass
class Loaders:
    """The run's data: training batches (resumable) and this process's validation share."""

    sampler: EpochBatches
    train: DataLoader
    val: DataLoader
    per_process_batch: int
    workers: int


def make_loaders(
    config: ResolvedConfig, source: Source, processes: Processes, preprocessing: Preprocessing
) -> Loaders:
    """Loaders of the training set (:class:`~sknet.data.EpochBatches`) and the validation set."""
    workers = default_workers(source.loader_workers, config.workers)
    train_set = source.train_set(config.input_size, config.min_scale, preprocessing)
    sampler = EpochBatches(
        len(train_set), config.batch_size, config.seed, processes.rank, processes.world_size
    )
    train = DataLoader(
        train_set, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
        persistent_workers=workers > 0, pin_memory=processes.device.type == "cuda",
    )
    per_process_batch = config.batch_size // processes.world_size
    val = val_loader(
        source, config.input_size, per_process_batch, workers, processes, preprocessing
    )
    return Loaders(sampler, train, val, per_process_batch, workers)
