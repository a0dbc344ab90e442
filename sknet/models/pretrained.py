"""Released weights: ``model.safetensors`` + ``config.json``, the one format every task uses.

``config.json`` holds everything needed to rebuild and feed the network: the registered model name
and its keyword overrides, the class count and names, and the preprocessing (input size, resize
before the centre crop, mean/std). The weights are a plain safetensors state dict, so loading them
never executes code. Training writes its best model as ``best.safetensors`` + ``best.json`` (a
``.safetensors`` file's config is the ``.json`` of the same stem); a directory holds
``model.safetensors`` + ``config.json``. Both are written atomically. Loading also reads timm's
weights (:mod:`sknet.models.timm_weights`), told apart by the missing sknet config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sknet.atomic import atomic_path, write_json
from sknet.models.registry import create_model

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
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path}: not a readable JSON config ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{config_path}: not an sknet weights config (format is not {FORMAT})")
    missing = {"model", "kwargs", "num_classes"} - set(config)
    if missing:
        raise ValueError(f"{config_path}: config lacks {', '.join(sorted(missing))}")
    return config


def load_state(path: PathLike) -> dict[str, torch.Tensor]:
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


def load_state_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: PathLike) -> None:
    """``model.load_state_dict(state)``, failing with one line that says what does not fit."""
    model = unwrap(model)
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [
        f"{key} {list(state[key].shape)} vs {list(value.shape)}"
        for key, value in own.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or unexpected or mismatched:
        name = getattr(model, "config", {}).get("name", type(model).__name__)
        parts = [
            f"{label} {len(items)} (e.g. {items[0]})"
            for label, items in (
                ("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)
            )
            if items
        ]
        raise ValueError(
            f"{source}: weights do not fit model {name!r}: {'; '.join(parts)}; they belong to "
            "another model or class count"
        )
    model.load_state_dict(state)


def load_pretrained(path: PathLike, **overrides: Any) -> nn.Module:
    """Rebuild the model saved at ``path`` and load its weights (see :func:`save_pretrained`).

    ``path`` may also hold timm weights (see :func:`sknet.from_timm`): the model is then the
    counterpart of the timm architecture. ``overrides`` must not change the shapes (e.g.
    ``num_classes``); the returned model carries the whole config as
    ``model.pretrained_config`` (class names, preprocessing).
    """
    from sknet.models.timm_weights import from_timm, is_timm_source  # imports this module

    if is_timm_source(path):
        return from_timm(path, **overrides)
    config = read_config(path)
    return create_model(config["model"], pretrained=path, **overrides)


from_pretrained = load_pretrained
"""The same function under the name that Hugging Face and timm users look for."""


def build_pretrained(
    name: str, path: PathLike, num_classes: int | None, kwargs: dict[str, Any]
) -> nn.Module:
    """``create_model(name, pretrained=path, ...)``: check the config, build, load the weights.

    Weights in timm's layout (:func:`~sknet.models.timm_weights.is_timm_source`) are converted.
    """
    from sknet.models.timm_weights import from_timm, is_timm_source  # imports this module

    if is_timm_source(path):
        return from_timm(path, name, num_classes=num_classes, **kwargs)
    config = read_config(path)
    if config["model"] != name:
        raise ValueError(
            f"{path} holds weights of model {config['model']!r}, not {name!r}; use "
            f"sknet.load_pretrained({str(path)!r}) to build the model they belong to"
        )
    stored = int(config["num_classes"])
    if num_classes is not None and num_classes != stored:
        raise ValueError(
            f"{path} holds a {stored}-class classifier, not {num_classes}; load it with its own "
            f"class count and call model.reset_classifier({num_classes}) to fine-tune"
        )
    model = create_model(name, num_classes=stored, **{**config["kwargs"], **kwargs})
    load_state_into(model, load_state(path), path)
    model.pretrained_config = config
    return model
