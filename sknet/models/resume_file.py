"""``last.pt``, the resume state of a training run: its format, written and read in one place.

A plain dict for ``torch.load(path, weights_only=True)``: ``format`` and ``version``, the model's
:class:`~sknet.record.ModelRecord` under ``"record"`` (as ``config.json`` holds it) and its state
dict under ``"model"``, then what training adds (optimizer, progress, RNG states, settings: see
:mod:`sknet.training.checkpoint`). Written atomically, so a run killed at any moment keeps its
last good checkpoint. Version 1 files (the record as ``model_config`` + ``class_names``) are read
too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sknet.atomic import atomic_path
from sknet.errors import UserError
from sknet.models.weights_io import check_tensors, read_torch_file
from sknet.record import FORMAT, ModelRecord, check_version

CHECKPOINT_FORMAT = "sknet-train-state"
CHECKPOINT_VERSION = 2
"""``last.pt``'s ``format`` and ``version`` entries (2: the model record under ``"record"``)."""


def is_checkpoint(loaded: Any) -> bool:
    """Whether what a ``.pt`` file holds is our training checkpoint (else, e.g., timm weights)."""
    return isinstance(loaded, Mapping) and loaded.get("format") == CHECKPOINT_FORMAT


def write_checkpoint(path: Path, record: ModelRecord, state: Mapping[str, Any]) -> None:
    """Write ``last.pt`` atomically: the format fields, ``record`` and the training ``state``
    (which holds the model's state dict under ``"model"``)."""
    saved = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "record": record.to_json(), **state,
    }
    with atomic_path(path) as temporary:
        torch.save(saved, temporary)


def read_checkpoint(path: str | Path, where: str | None = None) -> dict[str, Any]:
    """Read a ``last.pt`` safely (``weights_only``); damaged or foreign files fail in one line.

    Returns the state with its ``"record"`` as a :class:`~sknet.record.ModelRecord`.
    """
    where = where or str(path)
    state = read_torch_file(path, "checkpoint", where)
    if not is_checkpoint(state):
        raise UserError(f"{where}: not an sknet training checkpoint (last.pt)")
    state = checked(state, where)
    check_tensors(state["model"], where)
    return state


def checked(state: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A checkpoint's state after its version check, ``"record"`` read as a record."""
    version = state.get("version")
    check_version(version, CHECKPOINT_VERSION, where)
    state = dict(state)
    if version == 1:
        state["record"] = _record_of_version_1(state)
    state["record"] = ModelRecord.from_json(state.get("record"), where)
    return state


def _record_of_version_1(state: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint's record: ``model_config`` and ``class_names`` as a record."""
    saved, settings = state["model_config"], state["config"]
    names = state.get("class_names") or None
    return {
        "format": FORMAT, "format_version": 2, "model": saved["name"],
        "kwargs": dict(saved["kwargs"]), "num_classes": int(saved["num_classes"]),
        "class_names": None if names is None else list(names), "preprocessing": None,
        "dataset": settings["data"], "eval_sizes": list(settings["eval_sizes"]),
        "input_size": int(settings["input_size"]),
    }
