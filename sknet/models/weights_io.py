"""Weights on disk: our released format, safe reading of torch files, and what does not fit.

Released weights are ``model.safetensors`` + ``config.json``, the one format every task uses.

``config.json`` is the model's :class:`~sknet.record.ModelRecord` (``record.to_json()``): the
registered model name and its keyword overrides, the class count and names (``null`` when
unknown), the preprocessing, and where the weights come from. The weights are a plain
safetensors state dict, so loading them never executes code. Training writes its best model as
``best.safetensors`` + ``best.json`` (a ``.safetensors`` file's config is the ``.json`` of the same
stem); a directory holds ``model.safetensors`` + ``config.json``. Both are written atomically.
Files from elsewhere (timm's ``.pth``, a training ``last.pt``) are read with
``torch.load(weights_only=True)`` by :func:`read_torch_file`, which never rebuilds arbitrary
objects. :class:`Mismatch` is the one account of a state dict that does not fit a model. Nothing
here builds a model (:mod:`sknet.models.factory` does).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sknet.atomic import atomic_path, write_json
from sknet.errors import UserError
from sknet.preprocessing import Preprocessing
from sknet.record import ModelRecord

LOG = logging.getLogger("sknet")

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PathLike = str | os.PathLike


def unwrap(model: nn.Module) -> nn.Module:
    """The network itself, without a DistributedDataParallel or ``torch.compile`` wrapper."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def model_record(model: nn.Module) -> ModelRecord:
    """The record of a model built by ``create_model`` (wrappers looked through)."""
    record = getattr(unwrap(model), "record", None)
    if not isinstance(record, ModelRecord):
        raise UserError(
            f"{type(unwrap(model)).__name__} has no model record: build it with "
            "sknet.create_model (or load it with sknet.load_pretrained)"
        )
    return record


def model_name(model: nn.Module) -> str:
    """The registered name of a model built by ``create_model``, else its class name."""
    record = getattr(unwrap(model), "record", None)
    return record.name if isinstance(record, ModelRecord) else type(unwrap(model)).__name__


def weight_paths(path: PathLike) -> tuple[Path, Path]:
    """``(weights, config)`` of a directory, a ``.safetensors`` file or its ``.json`` config."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path / WEIGHTS_NAME, path / CONFIG_NAME


def write_weights(
    model: nn.Module,
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    preprocessing: Preprocessing | Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model``'s weights and its record atomically (:func:`sknet.save_pretrained` adds a
    model card to a folder).

    Args:
        model: a model from :func:`~sknet.models.create_model` or
            :func:`~sknet.models.load_pretrained`: its ``model.record`` is what ``config.json``
            holds; DDP and ``torch.compile`` wrappers are looked through.
        path: a directory (gets ``model.safetensors`` + ``config.json``) or a ``.safetensors``
            file (gets the ``.json`` of the same stem beside it).
        class_names: one name per output class, recorded in ``model.record`` first (default:
            the record's own, ``null`` where unknown).
        preprocessing: how inputs are prepared (a :class:`~sknet.preprocessing.Preprocessing` or
            its JSON form), recorded in ``model.record`` first (default: the record's own).
        **extra: further JSON-able facts to record (e.g. ``dataset="digits"``).

    Returns:
        The path of the weights file.
    """
    model = unwrap(model)
    record = model_record(model)
    if class_names is not None:
        record = record.with_classes(record.num_classes, class_names)
    if isinstance(preprocessing, Mapping):
        preprocessing = Preprocessing.from_json(preprocessing, "save_pretrained(preprocessing=...)")
    if preprocessing is not None:
        record = replace(record, preprocessing=preprocessing)
    model.record = record
    if extra:
        record = replace(record, extra={**record.extra, **extra})
    weights, config_path = weight_paths(path)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(weights) as temporary:
        save_file(state, str(temporary), metadata={"format": "pt"})
    write_json(config_path, record.to_json())
    return weights


def config_path_of(path: PathLike) -> Path | None:
    """Where the config of our weights at ``path`` is (``X.json``, else the folder's
    ``config.json``), if there is one."""
    weights, config_path = weight_paths(path)
    if not config_path.exists() and (weights.parent / CONFIG_NAME).exists():
        config_path = weights.parent / CONFIG_NAME
    return config_path if config_path.exists() else None


def read_record(path: PathLike) -> ModelRecord:
    """The record of released weights at ``path`` (directory, ``.safetensors`` or ``.json``)."""
    config_path = config_path_of(path)
    if config_path is None:
        raise FileNotFoundError(
            f"{path}: no {weight_paths(path)[1].name} beside the weights; expected a directory "
            f"with {WEIGHTS_NAME} + {CONFIG_NAME}, or X.safetensors + X.json (as written by "
            "sknet.save_pretrained or sknet train), or timm's weights (sknet.from_timm)"
        )
    return ModelRecord.from_json(read_json(config_path), str(config_path))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON config file as a dict (``{}`` if it holds something else); damaged files fail in
    one line."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable JSON config ({error})") from None
    return config if isinstance(config, dict) else {}


def read_weights(path: PathLike) -> dict[str, torch.Tensor]:
    """The state dict stored in released weights at ``path``; corrupt files fail in one line."""
    weights, _ = weight_paths(path)
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: no such weights file")
    try:
        return load_file(str(weights))
    except Exception as error:  # safetensors raises its own error type for damaged files
        raise UserError(
            f"{weights}: not a readable safetensors file (truncated or corrupt?): {error}"
        ) from None


PLAIN_RECORDS = (argparse.Namespace,)
"""Classes that training checkpoints hold besides tensors and that unpickle as plain data (no
code runs): timm's ``train.py``, which LSKNet's ImageNet backbones (``lsk_s_backbone.pth.tar``)
were trained with, saves its settings as an ``argparse.Namespace`` under ``"args"``."""


def read_torch_file(
    path: PathLike, what: str, where: str | None = None, hint: str = "truncated or corrupt?"
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, plain containers and
    :data:`PLAIN_RECORDS` only.

    Args:
        path: the file.
        what: what the file should be, for the error message (e.g. ``"checkpoint"``).
        where: how to name the file in messages (default: its path).
        hint: what an unreadable file probably is, in the message.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated, corrupt or foreign file, or one holding other objects, in one
            line.
    """
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such {what}")
    try:
        with torch.serialization.safe_globals(list(PLAIN_RECORDS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and EOF errors of a truncated or foreign file
        text = str(error)
        refused = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
        if refused or "Unsupported global" in text:
            held = f" ({refused.group(1)})" if refused else ""
            raise UserError(
                f"{where}: not a readable {what}: it holds Python objects{held} besides tensors, "
                "which sknet never unpickles (unpickling can run code); save the weights as a "
                "state dict of tensors (torch.save(model.state_dict(), path)) or as safetensors"
            ) from None
        raise UserError(f"{where}: not a readable {what} ({hint}): {_reason(error)}") from None


def _reason(error: Exception) -> str:
    """The first line of ``torch.load``'s error, without its advice to unpickle anyway."""
    for line in str(error).splitlines():
        line = line.replace("Weights only load failed.", "").strip()
        if line and "weights_only" not in line and not line.startswith(
            ("Please file an issue", "Check the documentation")
        ):
            return line
    return type(error).__name__


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
"""The dtypes weights may be stored in; other floats than the model's are cast on loading."""
COUNTERS = "num_batches_tracked"
"""The one state entry that is an integer: BatchNorm's batch counter."""


def check_tensors(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse weights that would load silently wrong, in one line naming the first bad tensor.

    Every tensor but BatchNorm's integer ``num_batches_tracked`` must be floating point
    (:data:`FLOAT_DTYPES`): integer, bool or complex values are not weights, however they were
    made. Every floating value must be finite: NaN or Inf means damaged weights (a diverged
    run). Floats of another precision than float32 are cast on loading, with a note on the
    ``sknet`` logger.

    Raises:
        sknet.errors.UserError: a tensor of another dtype, or holding NaN/Inf.
    """
    if not isinstance(state, Mapping):
        raise UserError(f"{where}: no state dict (a mapping of names to tensors) in it")
    other: dict[str, int] = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise UserError(
                f"{where}: not a state dict: {key!r} holds a {type(tensor).__name__}, not a tensor"
            )
        if key.rsplit(".", 1)[-1] == COUNTERS and not tensor.is_floating_point():
            continue
        if tensor.dtype not in FLOAT_DTYPES:
            raise UserError(
                f"{where}: tensor {key!r} holds {str(tensor.dtype).removeprefix('torch.')} "
                "values, not floating point (float32, float16, bfloat16 or float64) as weights "
                "are; save the weights from the model's state_dict() as they are"
            )
        if not torch.isfinite(tensor).all():
            raise UserError(
                f"{where}: tensor {key!r} holds NaN/Inf values; the weights are damaged (a "
                "diverged run?)"
            )
        if tensor.dtype != torch.float32:
            name = str(tensor.dtype).removeprefix("torch.")
            other[name] = other.get(name, 0) + 1
    if other:
        held = ", ".join(f"{count} {name}" for name, count in other.items())
        LOG.warning("%s: %s tensor(s), cast to the model's float32 on loading", where, held)


@dataclass(frozen=True)
class Mismatch:
    """How a state dict fails to fit a model: the one account every loader reports.

    Keys are compared in the state dict's own naming (e.g. timm's); ``names`` maps each of the
    model's keys to that naming. The state dict is read in its order, batch counters last (a
    parameter or statistic is the more telling offender).

    Attributes:
        missing: keys (the state dict's naming) the model needs and the state dict lacks.
        unexpected: state-dict keys the model has no place for.
        mismatched: ``(key, shape in the file, our key, shape we need)``.
        first: the first unexpected or misshapen key, if any.
        fitted: state-dict keys that fitted before the first offending one (to tell which of
            several models comes closest).
        names: our key -> the state dict's name for it.
    """

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, list[int], str, list[int]]]
    first: str | None
    fitted: int
    names: dict[str, str]

    @classmethod
    def of(
        cls,
        state: Mapping[str, torch.Tensor],
        own: Mapping[str, torch.Tensor],
        names: Mapping[str, str] | None = None,
        counters_optional: bool = False,
    ) -> Mismatch | None:
        """Compare ``state`` with the model state ``own``; ``None`` when everything fits.

        Args:
            state: the state dict read from a file, under its own names.
            own: the model's state dict, under our names.
            names: our key -> the state dict's name for it (default: the same names).
            counters_optional: a missing BatchNorm ``num_batches_tracked`` is no misfit.
        """
        names = {key: key for key in own} if names is None else dict(names)
        ours_of = {theirs: ours for ours, theirs in names.items()}
        unexpected, mismatched, first, fitted = [], [], None, 0
        for key in sorted(state, key=lambda key: key.endswith("num_batches_tracked")):
            target = ours_of.get(key)
            if target is None:
                unexpected.append(key)
            elif state[key].shape != own[target].shape:
                mismatched.append((key, list(state[key].shape), target, list(own[target].shape)))
            else:
                fitted += first is None
                continue
            first = first or key
        missing = [
            names[key] for key in own
            if names[key] not in state
            and not (counters_optional and key.endswith("num_batches_tracked"))
        ]
        if not (missing or unexpected or mismatched):
            return None
        return cls(missing, unexpected, mismatched, first, fitted, names)

    def counts(self) -> str:
        """Every kind of misfit with its count and an example, e.g. ``missing 2 (e.g. fc.bias)``."""
        shapes = [f"{key} {theirs} vs {ours}" for key, theirs, _, ours in self.mismatched]
        return "; ".join(
            f"{label} {len(items)} (e.g. {items[0]})"
            for label, items in (
                ("missing", self.missing), ("unexpected", self.unexpected),
                ("shape mismatches", shapes),
            )
            if items
        )

    def first_offence(self, model: str, label: str = "key") -> str:
        """The first offending key, called ``label`` (e.g. ``"timm key"``), against ``model``."""
        for key, shape, ours, needed in self.mismatched:
            if key == self.first:
                return f"{label} {key!r} has shape {shape}, our {model!r} needs {needed} ({ours})"
        if self.first is not None:
            return f"{label} {self.first!r} has no counterpart in our {model!r}"
        ours_of = {theirs: ours for ours, theirs in self.names.items()}
        key = self.missing[0]
        return f"no {label} {key!r}, which our {model!r} needs ({ours_of[key]})"


def load_state_into(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: PathLike
) -> None:
    """``model.load_state_dict(state)``, failing with one line that says what does not fit.

    BatchNorm batch counters may be missing (the weights of a model with frozen norms, which
    have none): the model keeps its own.
    """
    model = unwrap(model)
    mismatch = Mismatch.of(state, model.state_dict(), counters_optional=True)
    if mismatch is not None:
        raise UserError(
            f"{source}: weights do not fit model {model_name(model)!r}: {mismatch.counts()}; "
            "they belong to another model or class count"
        )
    model.load_state_dict(state)
