"""Weights on disk: our released format, safe reading of torch files, and what does not fit.

Released weights are ``model.safetensors`` + ``config.json``, the one format every task uses.

``config.json`` holds everything needed to rebuild and feed the network: the registered model name
and its keyword overrides, the class count and names, and the preprocessing (input size, resize
before the centre crop, mean/std). The weights are a plain safetensors state dict, so loading them
never executes code. Training writes its best model as ``best.safetensors`` + ``best.json`` (a
``.safetensors`` file's config is the ``.json`` of the same stem); a directory holds
``model.safetensors`` + ``config.json``. Both are written atomically. Files from elsewhere
(timm's ``.pth``, a training ``last.pt``) are read with ``torch.load(weights_only=True)`` by
:func:`read_torch_file`, which never rebuilds arbitrary objects. :class:`Mismatch` is the one
account of a state dict that does not fit a model. Nothing here builds a model
(:mod:`sknet.models.factory` does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sknet.atomic import atomic_path, write_json

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "sknet-pretrained"
FORMAT_VERSION = 1
PathLike = str | os.PathLike


def unwrap(model: nn.Module) -> nn.Module:
    """The network itself, without a DistributedDataParallel or ``torch.compile`` wrapper."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def model_name(model: nn.Module) -> str:
    """The registered name of a model built by ``create_model``, else its class name."""
    return getattr(model, "config", {}).get("name", type(model).__name__)


def weight_paths(path: PathLike) -> tuple[Path, Path]:
    """``(weights, config)`` of a directory, a ``.safetensors`` file or its ``.json`` config."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path / WEIGHTS_NAME, path / CONFIG_NAME


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_jsonable(item) for item in value]
    return value


def make_record(
    model: nn.Module,
    *,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The config that :func:`save_pretrained` writes for ``model`` (see there for the args)."""
    model = unwrap(model)
    config = getattr(model, "config", None)
    if not config:
        raise ValueError("save_pretrained needs a model built by sknet.create_model (no .config)")
    classes = int(config["num_classes"])
    names = [str(name) for name in (range(classes) if class_names is None else class_names)]
    if len(names) != classes:
        raise ValueError(f"save_pretrained: {len(names)} class names for {classes} classes")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config["name"],
        "kwargs": _jsonable(config["kwargs"]),
        "num_classes": classes,
        "class_names": names,
        "preprocessing": _jsonable(dict(preprocessing or {})),
        **_jsonable(extra),
    }


def save_pretrained(
    model: nn.Module,
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model``'s weights and config atomically (also ``model.save_pretrained(path)``).

    Args:
        model: a model from :func:`~sknet.models.create_model` (it carries ``model.config``);
            DDP and ``torch.compile`` wrappers are looked through.
        path: a directory (gets ``model.safetensors`` + ``config.json``) or a ``.safetensors``
            file (gets the ``.json`` of the same stem beside it).
        class_names: one name per output class (default: those of the weights the model was
            loaded from, ``model.pretrained_config``, if the class count is still theirs; else
            ``"0"``, ``"1"``, ...).
        preprocessing: how inputs were prepared: ``input_size``, ``resize``, ``interpolation``,
            ``mean``, ``std`` (see :mod:`sknet.data`; default: ``model.pretrained_config``'s).
        **extra: further JSON-able facts to record (e.g. ``dataset="digits"``).

    Returns:
        The path of the weights file.
    """
    model = unwrap(model)
    loaded_from = getattr(model, "pretrained_config", None) or {}
    classes = getattr(model, "config", {}).get("num_classes")
    if class_names is None and loaded_from.get("num_classes") == classes:
        class_names = loaded_from.get("class_names")
    if preprocessing is None:
        preprocessing = loaded_from.get("preprocessing")
    record = make_record(model, class_names=class_names, preprocessing=preprocessing, **extra)
    weights, config_path = weight_paths(path)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(weights) as temporary:
        save_file(state, str(temporary), metadata={"format": "pt"})
    write_json(config_path, record)
    return weights


def read_config(path: PathLike) -> dict[str, Any]:
    """The config of released weights at ``path`` (directory, ``.safetensors`` or ``.json``)."""
    weights, config_path = weight_paths(path)
    if not config_path.exists() and (weights.parent / CONFIG_NAME).exists():
        config_path = weights.parent / CONFIG_NAME
    if not config_path.exists():
        raise FileNotFoundError(
            f"{path}: no {config_path.name} beside the weights; expected a directory with "
            f"{WEIGHTS_NAME} + {CONFIG_NAME}, or X.safetensors + X.json (as written by "
            "sknet.save_pretrained or sknet train), or timm's weights (sknet.from_timm)"
        )
    config = read_json(config_path)
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path}: not an sknet weights config (format is not {FORMAT})")
    check_version(config.get("format_version"), FORMAT_VERSION, config_path)
    missing = {"model", "kwargs", "num_classes"} - set(config)
    if missing:
        raise ValueError(f"{config_path}: config lacks {', '.join(sorted(missing))}")
    return config


def read_json(path: Path) -> dict[str, Any]:
    """A JSON config file as a dict (``{}`` if it holds something else); damaged files fail in
    one line."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON config ({error})") from None
    return config if isinstance(config, dict) else {}


def check_version(version: Any, supported: int, where: PathLike) -> None:
    """Refuse a file whose format version is missing, malformed or newer than ``supported``."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: no valid format version ({version!r}); the file is damaged")
    if version > supported:
        raise ValueError(
            f"{where}: written in format version {version}, newer than the {supported} this "
            "sknet reads; upgrade sknet (pip install -U sknet)"
        )


def read_weights(path: PathLike) -> dict[str, torch.Tensor]:
    """The state dict stored in released weights at ``path``; corrupt files fail in one line."""
    weights, _ = weight_paths(path)
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: no such weights file")
    try:
        return load_file(str(weights))
    except Exception as error:  # safetensors raises its own error type for damaged files
        raise ValueError(
            f"{weights}: not a readable safetensors file (truncated or corrupt?): {error}"
        ) from None


def read_torch_file(
    path: PathLike, what: str, where: str | None = None, hint: str = "truncated or corrupt?"
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only.

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
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and EOF errors of a truncated or foreign file
        text = str(error).strip()
        first_line = text.splitlines()[0] if text else type(error).__name__
        raise ValueError(
            f"{where}: not a readable {what} ({hint}): {first_line}"
        ) from None


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
    """``model.load_state_dict(state)``, failing with one line that says what does not fit."""
    model = unwrap(model)
    mismatch = Mismatch.of(state, model.state_dict())
    if mismatch is not None:
        raise ValueError(
            f"{source}: weights do not fit model {model_name(model)!r}: {mismatch.counts()}; "
            "they belong to another model or class count"
        )
    model.load_state_dict(state)
