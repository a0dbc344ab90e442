"""Where weights are, told once: any weights location read into a state dict and its record.

A location is a Hugging Face hub id (``hf-hub:ORG/NAME[@REVISION]``, whose folder in the local
cache :mod:`sknet.models.hub` finds), a training run's folder (its ``best.safetensors``, else
``model.safetensors``, else ``last.pt``), our weights folder or file (``model.safetensors`` +
``config.json``, ``X.safetensors`` + ``X.json``), a training ``last.pt``, LSKNet's official
checkpoints (``lsk_*_backbone.pth.tar``, mmrotate detector files; translated to our names by
:mod:`sknet.models.lsknet_weights`), or timm's weights (a hub folder, ``.safetensors``, ``.pth``,
``.pt``, ``.bin``). :func:`locate` decides which, reads each file once and returns what
:mod:`sknet.models.factory` builds from. Nothing here builds a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from sknet.models.hub import hub_folder, is_hub_id
from sknet.models.lsknet_weights import from_official, recognises
from sknet.models.resume_file import checked, is_checkpoint
from sknet.models.timm_weights import is_timm_source, plain_state, read_timm
from sknet.models.weights_io import (
    check_tensors,
    read_record,
    read_torch_file,
    read_weights,
    weight_paths,
)
from sknet.record import ModelRecord

RUN_FILES = ("best.safetensors", "model.safetensors", "last.pt")
"""What a folder of weights is read for, in order: a training run's best, a release, a run's
resume state."""

WEIGHTS_HELP = (
    "pass a training --out folder, a folder with model.safetensors + config.json, an "
    "X.safetensors file, a training last.pt, timm's or LSKNet's weights, or a hub id "
    "hf-hub:ORG/NAME"
)


@dataclass(frozen=True)
class Found:
    """Weights read from a location.

    Attributes:
        path: the file read (a timm hub folder: the folder).
        state: the state dict, under its own names.
        record: our record of the network (``None`` for timm's weights).
        timm_config: timm's config beside timm's weights (``{}`` if none; ``None`` for ours).
        checkpoint: the whole training state when a ``last.pt`` was read.
        backbone_only: the weights hold no classifier (``record.num_classes`` is 0): an
            LSKNet backbone without its head, or a detector's backbone.
    """

    path: Path
    state: dict[str, torch.Tensor]
    record: ModelRecord | None
    timm_config: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    backbone_only: bool = False


def where(path: str | os.PathLike, flag: str) -> str:
    """How messages name a path: with the option it came from, if any."""
    return f"{flag} {path}" if flag else str(path)


def locate(location: str | os.PathLike, flag: str = "") -> Found:
    """Identify the weights at ``location`` and read them (each file once).

    What is read is checked once, here, for every entry point: tensors of a dtype that is no
    weights' and NaN/Inf values are refused (:func:`~sknet.models.weights_io.check_tensors`).

    Args:
        location: see the module docstring.
        flag: the option ``location`` came from (e.g. ``--checkpoint``), for messages.

    Raises:
        FileNotFoundError: nothing loadable there.
        sknet.errors.UserError: unreadable, foreign or damaged files (one line).
    """
    found = _read(location, flag)
    check_tensors(found.state, where(found.path, flag))
    return found


def _read(location: str | os.PathLike, flag: str) -> Found:
    """:func:`locate` before the tensors are checked."""
    if is_hub_id(location):
        location = hub_folder(str(location))
    path = Path(location)
    if path.is_dir():
        found = [path / name for name in RUN_FILES if (path / name).exists()]
        if found:
            path = found[0]
        elif not is_timm_source(path):
            raise FileNotFoundError(f"{where(location, flag)}: no weights there; {WEIGHTS_HELP}")
    elif path.suffix != ".pt" and (
        not path.exists() or (path.suffix == ".json" and not weight_paths(path)[0].exists())
    ):  # (a missing last.pt is named as such below)
        raise FileNotFoundError(f"{where(location, flag)}: no weights there; {WEIGHTS_HELP}")
    if path.suffix == ".pt":
        loaded = read_torch_file(path, "checkpoint", where(path, flag))
        if not is_checkpoint(loaded):
            return _foreign(path, plain_state(loaded, str(path)), {})
        state = checked(loaded, where(path, flag))
        record = state["record"]
        progress = {"epoch": int(state["epoch"]), "step": int(state["step"])}
        record = replace(record, extra={**record.extra, **progress})
        return Found(path, state["model"], record, checkpoint=state)
    if is_timm_source(path):
        state, config = read_timm(path)
        return _foreign(path, state, config)
    return Found(weight_paths(path)[0], read_weights(path), read_record(path))


def _foreign(path: Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Found:
    """Weights from elsewhere: LSKNet's official layouts (under our names, with a record),
    else timm's."""
    if recognises(state):
        official = from_official(state, str(path))
        return Found(path, official.state, official.record, backbone_only=official.backbone_only)
    return Found(path, state, None, config)
