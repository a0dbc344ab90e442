"""timm's weights in our models, and ours in timm's: the name map between the two layouts.

timm's ResNet family and our :class:`~sknet.models.ResNeXt` compute the same network for the
architectures in :data:`TIMM_ARCHITECTURES` (the tests check it output for output): the same
layers in the same order, the stride in the middle convolution, "same" padding, the stem's
7x7/2 conv and padded 3x3/2 max-pool. Only the names differ (ours -> timm's):

* ``stem.0.conv``, ``stem.0.bn`` -> ``conv1``, ``bn1``; ``fc`` -> ``fc``;
* ``stages.{i}.{j}`` -> ``layer{i+1}.{j}``, and in each block:
* ResNeXt and SE blocks: ``conv{k}.conv``, ``conv{k}.bn`` -> ``conv{k}``, ``bn{k}``;
* SK blocks: ``conv1``/``conv3`` keep their names; ``conv2.branches.{m}`` -> ``conv2.paths.{m}``
  (the same order: 3x3, then 3x3 with dilation 2); ``conv2.attention.fuse.conv``/``.bn`` ->
  ``conv2.attn.fc_reduce``/``conv2.attn.bn`` (Eq. 3); ``conv2.attention.select`` ->
  ``conv2.attn.fc_select`` (one 1x1 conv to M*C logits, read as [M, C] by both);
* ``downsample.conv``/``.bn`` -> ``downsample.0``/``.1``; ``se.fc1``, ``se.fc2`` unchanged.

timm's SK attention is ours: it pools the sum of the branches, reduces to
``d = max(C/16, 32)`` channels (its ``make_divisible(C/16, 32)`` gives the same for every width
of these models), applies BN and ReLU, and takes a softmax over the branch axis; our two-branch
Select (``U_2 + a_1 (U_1 - U_2)``) is the same sum rearranged. Its SE is ours too
(``C -> C/16 -> C`` 1x1 convs with bias, ReLU, sigmoid, on the block output before the
shortcut). timm's ``legacy_*`` SENets are not: their stem pools with ``ceil_mode`` and no padding;
nor are its ``skresnet*`` (split input, no groups) or ``*d`` models (deep stem, pooled shortcut).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from sknet.layers import SKConv
from sknet.models.pretrained import CONFIG_NAME, make_record, unwrap
from sknet.models.registry import create_model
from sknet.models.resnext import ResNeXt

TIMM_ARCHITECTURES: dict[str, str] = {
    "skresnext50_32x4d": "sknet50",
    "resnext50_32x4d": "resnext50_32x4d",
    "resnext101_32x4d": "resnext101_32x4d",
    "seresnext50_32x4d": "seresnext50_32x4d",
    "seresnext101_32x4d": "seresnext101_32x4d",
}
"""timm architecture -> our model that computes the same network (checked by the tests)."""

_SUPPORTED = "timm import/export covers the ImageNet ResNeXt models: " + ", ".join(
    f"{ours} (timm's {theirs})" for theirs, ours in TIMM_ARCHITECTURES.items()
)

IMAGENET_PREPROCESSING: dict[str, Any] = {
    "input_size": 224, "resize": 256, "interpolation": "bicubic",
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
}
"""What a timm state dict without its config is assumed to expect: timm's ImageNet evaluation
for ``skresnext50_32x4d.ra_in1k`` (resize to 256, centre crop 224, ImageNet mean/std on [0, 1])."""

TIMM_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
"""Weight files of a timm folder (as the Hugging Face hub holds them), in order of preference."""

WRAPPER_KEYS = ("state_dict", "model")
"""Keys under which training checkpoints nest the state dict."""

STRIPPED_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes that DistributedDataParallel and ``torch.compile`` add to every key."""

_TOP = (
    (r"stem\.0\.conv\.", "conv1."),
    (r"stem\.0\.bn\.", "bn1."),
    (r"fc\.", "fc."),
)
_SHARED_BLOCK = (
    (r"downsample\.conv\.", "downsample.0."),
    (r"downsample\.bn\.", "downsample.1."),
    (r"se\.(fc[12])\.", r"se.\1."),
)
_PLAIN_BLOCK = (
    (r"conv(\d)\.conv\.", r"conv\1."),
    (r"conv(\d)\.bn\.", r"bn\1."),
    *_SHARED_BLOCK,
)
_SK_BLOCK = (
    (r"conv([13])\.(conv|bn)\.", r"conv\1.\2."),
    (r"conv2\.branches\.(\d+)\.(conv|bn)\.", r"conv2.paths.\1.\2."),
    (r"conv2\.attention\.fuse\.conv\.", "conv2.attn.fc_reduce."),
    (r"conv2\.attention\.fuse\.bn\.", "conv2.attn.bn."),
    (r"conv2\.attention\.select\.", "conv2.attn.fc_select."),
    *_SHARED_BLOCK,
)
_BLOCK = re.compile(r"stages\.(\d+)\.(\d+)\.(.*)")
StateDict = dict[str, torch.Tensor]


class WeightsMismatch(ValueError):
    """Weights that do not fit a model; ``fitted`` counts the keys that fitted before the first
    offending one (to tell which of several models comes closest)."""

    def __init__(self, message: str, fitted: int) -> None:
        super().__init__(message)
        self.fitted = fitted


def _rename(key: str, rules: Sequence[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        renamed, count = re.subn(f"^{pattern}", replacement, key)
        if count:
            return renamed
    return None


def timm_names(model: nn.Module) -> dict[str, str]:
    """Our state-dict key -> timm's, for every key of ``model``.

    Raises:
        ValueError: ``model`` has no timm counterpart (not an ImageNet :class:`ResNeXt`).
    """
    model = unwrap(model)
    name = getattr(model, "config", {}).get("name", type(model).__name__)
    if not isinstance(model, ResNeXt):
        raise ValueError(f"model {name!r} has no timm counterpart: {_SUPPORTED}")
    block_rules = (
        _SK_BLOCK if any(isinstance(module, SKConv) for module in model.modules()) else _PLAIN_BLOCK
    )
    names = {}
    for key in model.state_dict():
        block = _BLOCK.fullmatch(key)
        if block:
            renamed = _rename(block[3], block_rules)
            if renamed is not None:
                renamed = f"layer{int(block[1]) + 1}.{block[2]}.{renamed}"
        else:
            renamed = _rename(key, _TOP)
        if renamed is None:
            raise ValueError(
                f"model {name!r}: its key {key!r} has no counterpart in timm's ResNet; {_SUPPORTED}"
            )
        names[key] = renamed
    return names


def to_timm(model: nn.Module) -> StateDict:
    """``model``'s state dict under timm's names, for ``timm_model.load_state_dict``.

    The tensors are the model's own (not copies). :data:`TIMM_ARCHITECTURES` says which timm
    architecture to build; its ``num_classes`` (and ``in_chans``) must be the model's.
    """
    names = timm_names(model)
    return {names[key]: value for key, value in unwrap(model).state_dict().items()}


def from_timm(
    source: nn.Module | Mapping[str, Any] | str | os.PathLike,
    name: str | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Our model holding timm's weights.

    Args:
        source: a timm model, its state dict, or a file: ``.safetensors``, or ``.pth``/``.pt``/
            ``.bin`` read with ``torch.load(weights_only=True)``, or a folder with one of
            :data:`TIMM_WEIGHT_NAMES` and timm's ``config.json`` (a Hugging Face hub download).
            A state dict nested under ``"state_dict"`` or ``"model"`` and keys prefixed with
            ``module.`` are accepted.
        name: our model to build (default: the counterpart of the timm architecture that the
            model or ``config.json`` names, else the one whose keys and shapes the weights fit).
        num_classes: must equal the classifier's outputs in the weights, if given.
        class_names: one per class (default: timm's ``label_names`` if recorded, else for 1000
            classes ImageNet-1k's WordNet ids as timm lists them, when timm is installed).
        preprocessing: overrides of the recorded preprocessing (default: timm's pretrained config
            when known, else :data:`IMAGENET_PREPROCESSING`).
        **kwargs: overrides of our model's config (e.g. ``branches`` for a timm SK model built
            with other kernels).

    Returns:
        The model (train mode, like :func:`~sknet.create_model`); ``model.pretrained_config``
        holds the class names and preprocessing, so ``model.save_pretrained(folder)`` writes a
        folder that rebuilds it.

    Raises:
        ValueError: the weights do not fit (the message names the first offending key), or a
            timm model's layer geometry (stride, padding, dilation, groups) differs from ours.
        FileNotFoundError: no weights at ``source``.
    """
    timm_model = source if isinstance(source, nn.Module) else None
    if timm_model is not None:
        label = f"timm model {type(timm_model).__name__}"
        state, config = dict(timm_model.state_dict()), _module_config(timm_model)
    elif isinstance(source, Mapping):
        label, config = "timm state dict", {}
        state = _plain_state(source, label)
    else:
        label = str(source)
        state, config = read_timm(source)
    if any(key.startswith(("stem.", "stages.")) for key in state):
        raise ValueError(
            f"{label}: these are sknet's own key names (stem.*, stages.*), not timm's, and no "
            "sknet config.json is beside them; released weights need it (sknet.save_pretrained), "
            "a training last.pt is read by sknet eval or train --resume"
        )
    architecture = config.get("architecture")
    if architecture is not None and architecture in TIMM_ARCHITECTURES:
        label = f"{label} (timm's {architecture})"
    head, stem = state.get("fc.weight"), state.get("conv1.weight")
    classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 0
    if num_classes is not None and num_classes != classes:
        raise ValueError(
            f"{label} holds a {classes}-class classifier, not {num_classes}; load it with its own "
            f"class count and call model.reset_classifier({num_classes}) to fine-tune"
        )
    if stem is not None and stem.ndim == 4 and stem.shape[1] != 3 and "in_chans" not in kwargs:
        kwargs["in_chans"] = int(stem.shape[1])
    name = _our_name(name, architecture, state, classes, kwargs, label)
    model = create_model(name, num_classes=classes, **kwargs)
    names = timm_names(model)
    try:
        converted = _to_ours(state, names, model.state_dict(), name)
    except WeightsMismatch as error:
        raise ValueError(f"{label}: {error}") from None
    model.load_state_dict(converted)
    if timm_model is not None:
        _check_geometry(timm_model, model, names, label)
    model.pretrained_config = make_record(
        model,
        class_names=_class_names(class_names, config, classes),
        preprocessing={**_timm_preprocessing(config), **dict(preprocessing or {})},
        timm_architecture=architecture,
    )
    return model


def is_timm_source(path: str | os.PathLike) -> bool:
    """Whether ``path`` is to be read as timm weights rather than our format.

    Ours always has our config beside the weights (``config.json`` or ``X.json``); a folder
    whose ``config.json`` names a timm ``architecture``, a ``.safetensors`` file without our
    config, and any ``.pth``/``.pt``/``.bin`` file are timm's.
    """
    path = Path(path)
    if path.suffix == ".json":
        return False
    if path.is_dir():
        config = path / CONFIG_NAME
        if config.exists():
            return "architecture" in _read_json(config)
        return any((path / weights).exists() for weights in TIMM_WEIGHT_NAMES)
    if path.suffix == ".safetensors":
        if path.with_suffix(".json").exists():
            return False
        config = path.parent / CONFIG_NAME
        if config.exists():
            return "architecture" in _read_json(config)
        return path.exists()
    return path.suffix in (".pth", ".pt", ".bin") or path.is_file()


def read_timm(path: str | os.PathLike) -> tuple[StateDict, dict[str, Any]]:
    """The state dict of timm weights at ``path`` and timm's config beside them (or ``{}``).

    Nothing is unpickled beyond tensors and plain containers (``weights_only=True``).
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = [path / weights for weights in TIMM_WEIGHT_NAMES if (path / weights).exists()]
        if not found:
            raise FileNotFoundError(
                f"{path}: no {' or '.join(TIMM_WEIGHT_NAMES)} in this folder; pass the weights file"
            )
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # each format raises its own error types for damaged files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ValueError(
            f"{path}: not a readable weights file (safetensors, or a torch.save file of tensors "
            f"only): {first_line}"
        ) from None
    config_path = folder / CONFIG_NAME
    config = _read_json(config_path) if config_path.exists() else {}
    return _plain_state(loaded, str(path)), config if "architecture" in config else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON config ({error})") from None
    return config if isinstance(config, dict) else {}


def _plain_state(loaded: Any, label: str) -> StateDict:
    """A flat name -> tensor dict: unnested from a checkpoint, without wrapper prefixes."""
    for key in WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ValueError(f"{label}: not a state dict (expected a mapping of names to tensors)")
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{label}: not a state dict: {key!r} holds a {type(value).__name__}, not a tensor"
            )
    state = dict(loaded)
    for prefix in STRIPPED_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _module_config(timm_model: nn.Module) -> dict[str, Any]:
    """A timm model's pretrained config, shaped like the ``config.json`` of a timm folder."""
    pretrained_cfg = dict(getattr(timm_model, "pretrained_cfg", None) or {})
    return {"architecture": pretrained_cfg.get("architecture"), "pretrained_cfg": pretrained_cfg}


def _our_name(
    name: str | None,
    architecture: str | None,
    state: StateDict,
    classes: int,
    kwargs: dict[str, Any],
    label: str,
) -> str:
    """The model to build: the one asked for, the architecture's counterpart, or the fitting one."""
    counterpart = TIMM_ARCHITECTURES.get(architecture or "")
    if name is not None:
        if counterpart is not None and counterpart != name:
            raise ValueError(
                f"{label} holds the weights of our {counterpart!r}, not {name!r}; build "
                f"{counterpart!r} (or leave the name out)"
            )
        return name
    if counterpart is not None:
        return counterpart
    failures = {}
    for candidate in dict.fromkeys(TIMM_ARCHITECTURES.values()):
        with torch.device("meta"):
            model = create_model(candidate, num_classes=classes, **kwargs)
        try:
            _to_ours(state, timm_names(model), model.state_dict(), candidate)
        except WeightsMismatch as error:
            failures[candidate] = error
            continue
        return candidate
    # The candidate with the most matching keys has the most telling first mismatch.
    closest = max(failures, key=lambda candidate: failures[candidate].fitted)
    raise ValueError(
        f"{label}: these weights fit none of our models with a timm counterpart; the closest: "
        f"{failures[closest]}; pass name=... if they are of another of our models"
    )


def _to_ours(
    state: Mapping[str, torch.Tensor],
    names: Mapping[str, str],
    own: Mapping[str, torch.Tensor],
    name: str,
) -> StateDict:
    """``state`` (timm's names) under our names; missing ``num_batches_tracked`` are kept ours.

    Raises:
        WeightsMismatch: naming the first key (in ``state``'s order, batch counters last) that
            does not fit.
    """
    ours_of = {theirs: ours for ours, theirs in names.items()}
    converted: StateDict = {}
    # Batch counters last: a parameter or statistic is the more telling first offender.
    ordered = sorted(state, key=lambda key: key.endswith("num_batches_tracked"))
    for key in ordered:
        value = state[key]
        target = ours_of.get(key)
        if target is None:
            raise WeightsMismatch(
                f"timm key {key!r} has no counterpart in our {name!r}; "
                f"{_hint(name)}", len(converted),
            )
        if value.shape != own[target].shape:
            raise WeightsMismatch(
                f"timm key {key!r} has shape {list(value.shape)}, our {name!r} needs "
                f"{list(own[target].shape)} ({target}); {_hint(name)}", len(converted),
            )
        converted[target] = value
    for key, value in own.items():
        if key not in converted:
            if not key.endswith("num_batches_tracked"):
                raise WeightsMismatch(
                    f"no timm key {names[key]!r}, which our {name!r} needs ({key}); "
                    f"{_hint(name)}", len(converted),
                )
            converted[key] = value
    return converted


def _hint(name: str) -> str:
    matching = [theirs for theirs, ours in TIMM_ARCHITECTURES.items() if ours == name]
    if matching:
        return f"our {name!r} takes the weights of timm's {' or '.join(matching)}"
    return _SUPPORTED


def _check_geometry(
    timm_model: nn.Module, model: nn.Module, names: Mapping[str, str], label: str
) -> None:
    """Fail unless every convolution matches its timm counterpart beyond its weight's shape.

    A state dict cannot tell a 3x3 with dilation 2 from one with dilation 3; a timm model can.
    """
    for module_name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            continue
        theirs_name = names[f"{module_name}.weight"].removesuffix(".weight")
        theirs = timm_model.get_submodule(theirs_name)
        attributes = (
            ("kernel_size", "stride", "dilation", "padding", "groups")
            if isinstance(module, nn.Conv2d)
            else ("eps",)
        )
        for attribute in attributes:
            if getattr(theirs, attribute, None) != getattr(module, attribute):
                raise ValueError(
                    f"{label}: {theirs_name} has {attribute} {getattr(theirs, attribute, None)}, "
                    f"our {module_name} {getattr(module, attribute)}: not the same network; "
                    "pass our config's overrides (e.g. branches=...) that match it"
                )


def _timm_preprocessing(config: Mapping[str, Any]) -> dict[str, Any]:
    """Our preprocessing record from timm's pretrained config (crop_pct -> resize as timm)."""
    pretrained_cfg = config.get("pretrained_cfg", config)
    if "input_size" not in pretrained_cfg:
        return dict(IMAGENET_PREPROCESSING)
    size = int(pretrained_cfg["input_size"][-1])
    crop_pct = float(pretrained_cfg.get("crop_pct") or 1.0)
    return {
        "input_size": size,
        "resize": math.floor(size / crop_pct),
        "interpolation": pretrained_cfg.get(
            "interpolation", IMAGENET_PREPROCESSING["interpolation"]
        ),
        "mean": list(pretrained_cfg.get("mean", IMAGENET_PREPROCESSING["mean"])),
        "std": list(pretrained_cfg.get("std", IMAGENET_PREPROCESSING["std"])),
    }


def _class_names(
    given: Sequence[str] | None, config: Mapping[str, Any], classes: int
) -> list[str] | None:
    """The given names, else timm's recorded ``label_names``, else ImageNet-1k's for 1000."""
    if given is not None:
        return [str(name) for name in given]
    pretrained_cfg = config.get("pretrained_cfg", config)
    recorded = config.get("label_names") or pretrained_cfg.get("label_names")
    if isinstance(recorded, Mapping):
        recorded = [recorded[key] for key in sorted(recorded, key=int)]
    if recorded and len(recorded) == classes:
        return [str(name) for name in recorded]
    if classes == 1000:
        try:
            from timm.data import ImageNetInfo
        except ImportError:
            return None
        return list(ImageNetInfo("imagenet-1k").label_names())
    return None
