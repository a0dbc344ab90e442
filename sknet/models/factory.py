"""Building and loading: the one place where a registered config becomes a network with weights.

:func:`create_model` builds a registered model (optionally loading weights), :func:`load_pretrained`
rebuilds the model that saved weights belong to, and :func:`from_timm` brings timm's weights into
their counterpart. They orchestrate the pure parts: the registry (:mod:`sknet.models.registry`),
our file format (:mod:`sknet.models.weights_io`) and the timm translation
(:mod:`sknet.models.timm_weights`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sknet.models.base import FeatureExtractor
from sknet.models.registry import get_entry
from sknet.models.timm_weights import (
    TIMM_ARCHITECTURES,
    WeightsMismatch,
    check_geometry,
    is_timm_source,
    module_config,
    plain_state,
    read_timm,
    timm_class_names,
    timm_names,
    timm_preprocessing,
    to_ours,
)
from sknet.models.weights_io import (
    PathLike,
    load_state_into,
    make_record,
    read_config,
    read_weights,
)

LOG = logging.getLogger("sknet")
"""Where loading says what it did beyond the obvious (a re-initialised classifier)."""


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: str | os.PathLike | bool | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`~sknet.models.list_models`.
        num_classes: classifier outputs (default: the model's dataset, 1000 for ImageNet; with
            ``pretrained``, the file's; another count keeps the pretrained backbone and gives a
            freshly initialised classifier, which is logged on the ``sknet`` logger).
        pretrained: released weights to load (a directory with ``model.safetensors`` +
            ``config.json``, or ``X.safetensors`` with ``X.json``; see
            :mod:`sknet.models.weights_io`), or timm's (see :func:`from_timm`); their recorded
            kwargs are the defaults. ``None`` or ``False``: an untrained model. There is no hub
            to download from, so ``True`` is refused: name the file or folder.
        features_only: return a :class:`~sknet.models.base.FeatureExtractor` instead, which
            outputs a list of feature maps and describes them in ``feature_info``.
        out_indices: with ``features_only``, the feature levels to return: 0 is the stem
            (stride 2 on ImageNet models), 1.. the stages (strides 4, 8, 16, 32 on the ImageNet
            ResNeXt family); default every stage.
        **kwargs: overrides of the registered config, e.g. ``branches=[(3, 1, 32), (5, 1, 64)]``
            or ``attention=False`` for the rows of Tables 6 and 7.

    Returns:
        The model; ``model.config`` records ``name``, ``num_classes`` and the overrides, which is
        all that is needed to build it again.
    """
    entry = get_entry(name)
    if out_indices is not None and not features_only:
        raise ValueError(f"{name}: out_indices needs features_only=True")
    accepted = set(inspect.signature(entry.builder).parameters) - {"num_classes"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise ValueError(
            f"model {name!r} does not take {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    if pretrained is True:
        raise ValueError(
            f"create_model({name!r}, pretrained=True): sknet downloads nothing; pass the path of "
            "weights on disk (our weights folder or .safetensors, or timm's files)"
        )
    if pretrained is not None and pretrained is not False:
        model = _build_pretrained(name, pretrained, num_classes, kwargs)
    else:
        classes = entry.default_num_classes if num_classes is None else num_classes
        model = entry.builder(num_classes=classes, **{**entry.config, **kwargs})
        model.config = {"name": name, "num_classes": classes, "kwargs": dict(kwargs)}
    return FeatureExtractor(model, out_indices) if features_only else model


def load_pretrained(path: PathLike, **overrides: Any) -> nn.Module:
    """Rebuild the model saved at ``path`` and load its weights (see
    :func:`~sknet.models.weights_io.save_pretrained`).

    ``path`` may also hold timm weights (see :func:`from_timm`): the model is then the
    counterpart of the timm architecture. ``overrides`` must not change the shapes, except
    ``num_classes`` (a new classifier on the pretrained backbone); the returned model carries the
    whole config as ``model.pretrained_config`` (class names, preprocessing).
    """
    if is_timm_source(path):
        return from_timm(path, **overrides)
    config = read_config(path)
    return create_model(config["model"], pretrained=path, **overrides)


from_pretrained = load_pretrained
"""The same function under the name that Hugging Face and timm users look for."""


def _build_pretrained(
    name: str, path: PathLike, num_classes: int | None, kwargs: dict[str, Any]
) -> nn.Module:
    """``create_model(name, pretrained=path, ...)``: check the config, build, load the weights."""
    if is_timm_source(path):
        return from_timm(path, name, num_classes=num_classes, **kwargs)
    config = read_config(path)
    if config["model"] != name:
        raise ValueError(
            f"{path} holds weights of model {config['model']!r}, not {name!r}; use "
            f"sknet.load_pretrained({str(path)!r}) to build the model they belong to"
        )
    stored = int(config["num_classes"])
    model = create_model(name, num_classes=stored, **{**config["kwargs"], **kwargs})
    load_state_into(model, read_weights(path), path)
    model.pretrained_config = config
    return fit_classifier(model, num_classes, str(path))


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
            :data:`~sknet.models.timm_weights.TIMM_WEIGHT_NAMES` and timm's ``config.json`` (a
            Hugging Face hub download). A state dict nested under ``"state_dict"`` or
            ``"model"`` and keys prefixed with ``module.`` are accepted.
        name: our model to build (default: the counterpart of the timm architecture that the
            model or ``config.json`` names, else the one whose keys and shapes the weights fit).
        num_classes: classifier outputs (default: the weights'); another count keeps the
            backbone and re-initialises the classifier (logged).
        class_names: one per class (default: timm's ``label_names`` if recorded, else for 1000
            classes ImageNet-1k's WordNet ids as timm lists them, when timm is installed).
        preprocessing: overrides of the recorded preprocessing (default: timm's pretrained config
            when known, else :data:`~sknet.models.timm_weights.IMAGENET_PREPROCESSING`).
        **kwargs: overrides of our model's config (e.g. ``branches`` for a timm SK model built
            with other kernels).

    Returns:
        The model (train mode, like :func:`create_model`); ``model.pretrained_config`` holds the
        class names and preprocessing, so ``model.save_pretrained(folder)`` writes a folder that
        rebuilds it.

    Raises:
        ValueError: the weights do not fit (the message names the first offending key), or a
            timm model's layer geometry (stride, padding, dilation, groups) differs from ours.
        FileNotFoundError: no weights at ``source``.
    """
    timm_model = source if isinstance(source, nn.Module) else None
    if timm_model is not None:
        label = f"timm model {type(timm_model).__name__}"
        state, config = dict(timm_model.state_dict()), module_config(timm_model)
    elif isinstance(source, Mapping):
        label, config = "timm state dict", {}
        state = plain_state(source, label)
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
    if stem is not None and stem.ndim == 4 and stem.shape[1] != 3 and "in_chans" not in kwargs:
        kwargs["in_chans"] = int(stem.shape[1])
    name = _timm_counterpart(name, architecture, state, classes, kwargs, label)
    model = create_model(name, num_classes=classes, **kwargs)
    names = timm_names(model)
    try:
        converted = to_ours(state, names, model.state_dict(), name)
    except WeightsMismatch as error:
        raise ValueError(f"{label}: {error}") from None
    model.load_state_dict(converted)
    if timm_model is not None:
        check_geometry(timm_model, model, names, label)
    model.pretrained_config = make_record(
        model,
        class_names=timm_class_names(class_names, config, classes),
        preprocessing={**timm_preprocessing(config), **dict(preprocessing or {})},
        timm_architecture=architecture,
    )
    return fit_classifier(model, num_classes, label)


def fit_classifier(model: nn.Module, num_classes: int | None, label: str) -> nn.Module:
    """``model`` with a ``num_classes``-way classifier: its own if the count is the same, else a
    freshly initialised one (``reset_classifier``), which is logged; the backbone stays."""
    if num_classes is None or num_classes == model.num_classes:
        return model
    before = model.num_classes
    kept = renew_classifier(model, num_classes)
    LOG.warning(
        "%s: kept the backbone (%d tensors) and re-initialised the classifier for %d classes "
        "(the weights have %d)", label, kept, num_classes, before,
    )
    return model


def renew_classifier(model: nn.Module, num_classes: int) -> int:
    """A freshly initialised ``num_classes``-way classifier on ``model``; returns how many of its
    state tensors (the backbone's) were kept."""
    model.reset_classifier(num_classes)
    return sum(1 for key in model.state_dict() if not key.startswith("fc."))


def _timm_counterpart(
    name: str | None,
    architecture: str | None,
    state: Mapping[str, torch.Tensor],
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
            to_ours(state, timm_names(model), model.state_dict(), candidate)
        except WeightsMismatch as error:
            failures[candidate] = error
            continue
        return candidate
    # The candidate with the most matching keys has the most telling first mismatch.
    closest = max(failures, key=lambda candidate: failures[candidate].mismatch.fitted)
    raise ValueError(
        f"{label}: these weights fit none of our models with a timm counterpart; the closest: "
        f"{failures[closest]}; pass name=... if they are of another of our models"
    )
