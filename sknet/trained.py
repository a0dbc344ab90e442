"""Trained weights, wherever they are (a training run's folder, a weights folder, an
``X.safetensors`` file or a training ``last.pt``), turned into the network and its record.

``sknet eval``, ``analyze``, ``export`` and ``predict`` read weights only through here. A
``last.pt`` is the resume state that training writes (:mod:`sknet.training.checkpoint`); its
format name and version live here, with the one reader that checks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sknet.data import Source, open_data
from sknet.models import create_model, load_pretrained
from sknet.models.timm_weights import is_timm_source
from sknet.models.weights_io import check_version, load_state_into, read_torch_file, weight_paths

CHECKPOINT_FORMAT = "sknet-train-state"
CHECKPOINT_VERSION = 1
"""``last.pt``: the ``format`` and ``version`` entries every checkpoint carries."""

RUN_FILES = ("best.safetensors", "model.safetensors", "last.pt")
"""What a folder of weights is read for, in order: a training run's best, a release, a run's
resume state."""

WEIGHTS_HELP = (
    "pass a training --out folder, a folder with model.safetensors + config.json, an "
    "X.safetensors file or a training last.pt"
)


def _where(path: str | os.PathLike, flag: str) -> str:
    """How messages name a path: with the option it came from, if any."""
    return f"{flag} {path}" if flag else str(path)


def read_checkpoint(path: str | os.PathLike, flag: str = "--resume") -> dict[str, Any]:
    """Read a ``last.pt`` safely (``weights_only``); damaged or foreign files fail in one line.

    ``flag`` names the option the path came from, for the error messages.
    """
    path = Path(path)
    where = _where(path, flag)
    state = read_torch_file(path, "checkpoint", where)
    if not is_checkpoint(state):
        raise ValueError(f"{where}: not an sknet training checkpoint (last.pt)")
    check_version(state.get("version"), CHECKPOINT_VERSION, where)
    return state


def is_checkpoint(loaded: Any) -> bool:
    """Whether what a ``.pt`` file holds is our training checkpoint (else, e.g., timm weights)."""
    return isinstance(loaded, dict) and loaded.get("format") == CHECKPOINT_FORMAT


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


def _from_checkpoint(
    path: Path, state: dict[str, Any], flag: str
) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a ``last.pt`` and a record shaped like a weights config."""
    check_version(state.get("version"), CHECKPOINT_VERSION, _where(path, flag))
    saved, settings = state["model_config"], state["config"]
    model = create_model(
        saved["name"], num_classes=int(saved["num_classes"]), **dict(saved["kwargs"])
    )
    load_state_into(model, state["model"], path)
    record = {
        "model": saved["name"], "kwargs": dict(saved["kwargs"]),
        "num_classes": int(saved["num_classes"]),
        "class_names": list(state.get("class_names", [])),
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
            folder with ``model.safetensors`` + ``config.json``, an ``X.safetensors`` file, a
            training ``last.pt``, or timm's weights (a hub folder, ``.safetensors``, ``.pth``,
            ``.pt``, ``.bin``: see :func:`sknet.from_timm`).
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
        found = [path / name for name in RUN_FILES if (path / name).exists()]
        if found:
            path = found[0]
        elif not is_timm_source(path):
            raise FileNotFoundError(f"{_where(weights, flag)}: no weights there; {WEIGHTS_HELP}")
    elif path.suffix != ".pt" and (
        not path.exists() or (path.suffix == ".json" and not weight_paths(path)[0].exists())
    ):  # (a missing last.pt is named as such below)
        raise FileNotFoundError(f"{_where(weights, flag)}: no weights there; {WEIGHTS_HELP}")
    loaded = None
    if path.suffix == ".pt":
        loaded = read_torch_file(path, "checkpoint", _where(path, flag))
    if is_checkpoint(loaded):
        model, record = _from_checkpoint(path, loaded, flag)
    else:
        model = load_pretrained(path)  # our released format, or timm's files
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
