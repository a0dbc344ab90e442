"""Building and loading: the one place where a registered config becomes a network with weights.

:func:`create_model` builds a registered model, :func:`load_pretrained` (the one loader) turns any
weights location into the network they belong to, and :func:`from_timm` brings timm's weights
into their counterpart. Every model leaves here carrying its :class:`~sknet.record.ModelRecord`
as ``model.record``. They orchestrate the pure parts: the registry
(:mod:`sknet.models.registry`), where weights are (:mod:`sknet.models.locate`), our file format
(:mod:`sknet.models.weights_io`) and the timm translation (:mod:`sknet.models.timm_weights`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sknet.errors import UserError
from sknet.layers import freeze_norm
from sknet.models.base import FeatureExtractor
from sknet.models.locate import locate, where
from sknet.models.lsknet_weights import require_official, takes_official
from sknet.models.registry import get_entry
from sknet.models.timm_weights import (
    TIMM_ARCHITECTURES,
    WeightsMismatch,
    check_geometry,
    module_config,
    plain_state,
    timm_class_names,
    timm_names,
    to_ours,
)
from sknet.models.weights_io import PathLike, check_tensors, load_state_into
from sknet.preprocessing import resolve_preprocessing, timm_preprocessing
from sknet.record import ModelRecord

LOG = logging.getLogger("sknet")
"""Where loading says what it did beyond the obvious (a re-initialised classifier)."""


def build(name: str, num_classes: int, kwargs: Mapping[str, Any]) -> nn.Module:
    """The registered ``name`` with ``num_classes`` outputs and config overrides ``kwargs``,
    carrying its record (the entry's default preprocessing, no class names): the one call of a
    registered builder."""
    entry = get_entry(name)
    accepted = set(inspect.signature(entry.builder).parameters) - {"num_classes"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise UserError(
            f"model {name!r} does not take {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    try:
        model = entry.builder(num_classes=num_classes, **{**entry.config, **kwargs})
    except UserError:
        raise
    except (ValueError, TypeError) as error:  # a layer refusing the configuration it was given
        shown = f" with {dict(kwargs)}" if kwargs else ""
        raise UserError(f"model {name!r}{shown}: {error}") from None
    model.record = ModelRecord(name, dict(kwargs), num_classes, None, entry.preprocessing)
    return model


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: str | os.PathLike | bool | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    frozen_norm: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`~sknet.models.list_models`.
        num_classes: classifier outputs (default: the model's dataset, 1000 for ImageNet; with
            ``pretrained``, the file's; another count keeps the pretrained backbone and gives a
            freshly initialised classifier, which is logged on the ``sknet`` logger).
        pretrained: weights to load: anything :func:`load_pretrained` reads (our weights folder
            or ``.safetensors``, a training run's folder or ``last.pt``, timm's files, LSKNet's
            ``lsk_*_backbone.pth.tar`` or mmrotate detector checkpoints, a hub id
            ``hf-hub:ORG/NAME[@REVISION]``); their recorded kwargs are the defaults. ``True``:
            the published weights the registry names (``hub_id``, timm's). ``None`` or
            ``False``: an untrained model.
        features_only: return a :class:`~sknet.models.base.FeatureExtractor` instead, which
            outputs a list of feature maps and describes them in ``feature_info``.
        out_indices: with ``features_only``, the feature levels to return: 0 is the stem
            (stride 2 on ImageNet models), 1.. the stages (strides 4, 8, 16, 32 on the ImageNet
            ResNeXt family); a model without a stem level (LSKNet) numbers its stages from 0;
            default every stage.
        frozen_norm: every BatchNorm frozen (:func:`~sknet.layers.freeze_norm`) once the weights
            are in: statistics and affine parameters fixed, so that training works at any batch
            size, one image included (detection). Not recorded in ``model.record``: the weights
            are the same, and a frozen model's saved weights load into a plain one.
        **kwargs: overrides of the registered config, e.g. ``branches=[(3, 1, 32), (5, 1, 64)]``
            or ``attention=False`` for the rows of Tables 6 and 7.

    Returns:
        The model; ``model.record`` (:class:`~sknet.record.ModelRecord`) records ``name``,
        ``num_classes``, the overrides, class names and preprocessing: all it takes to build and
        feed it again.
    """
    entry = get_entry(name)
    if out_indices is not None and not features_only:
        raise UserError(f"{name}: out_indices needs features_only=True")
    if pretrained is True:
        if entry.hub_id is None:
            raise UserError(
                f"create_model({name!r}, pretrained=True): no published weights of {name!r} are "
                "known; pass a path (our weights folder or .safetensors, a run, timm's files) "
                "or a hub id hf-hub:ORG/NAME"
            )
        pretrained = f"hf-hub:{entry.hub_id}"
    if pretrained is not None and pretrained is not False:
        model = load(
            pretrained, name=name, num_classes=num_classes, features_only=features_only,
            **kwargs,
        ).model
    else:
        classes = entry.default_num_classes if num_classes is None else num_classes
        model = build(name, classes, kwargs)
    if features_only:
        model = FeatureExtractor(model, out_indices)
    return freeze_norm(model) if frozen_norm else model


@dataclass(frozen=True)
class Loaded:
    """A network built from weights on disk, the file read and (for a ``last.pt``) the whole
    training state."""

    path: Path
    model: nn.Module
    checkpoint: dict[str, Any] | None = None

    @property
    def record(self) -> ModelRecord:
        return self.model.record


def load(
    location: PathLike,
    *,
    name: str | None = None,
    num_classes: int | None = None,
    flag: str = "",
    features_only: bool = False,
    **kwargs: Any,
) -> Loaded:
    """The one loader: identify the weights at ``location`` once, build their network, load them.

    Args:
        location: see :mod:`sknet.models.locate`.
        name: the model the caller expects (a mismatch is refused; timm weights are built as it).
        num_classes: the classifier wanted (another count than the weights' re-initialises it).
            Weights without a classifier (an LSKNet backbone or detector file) get a freshly
            initialised one of the model's default count, which is logged.
        flag: the option ``location`` came from, for messages.
        features_only: the caller keeps only the backbone: weights without a classifier get
            none.
        **kwargs: config overrides (they must not change the weights' shapes).
    """
    found = locate(location, flag)
    if found.record is None:
        label = str(found.path)
        if name is not None and takes_official(name):
            require_official(found.state, where(found.path, flag))
        model = _timm_model(found.state, found.timm_config or {}, label, name, None, **kwargs)
        return Loaded(found.path, fit_classifier(model, num_classes, label))
    record = found.record
    if name is not None and record.name != name:
        raise UserError(
            f"{found.path} holds weights of model {record.name!r}, not {name!r}; use "
            f"sknet.load_pretrained({str(location)!r}) to build the model they belong to"
        )
    record = replace(record, kwargs={**record.kwargs, **kwargs})
    model = from_record(record, found.state, found.path)
    if found.backbone_only and num_classes is None and not features_only:
        num_classes = get_entry(record.name).default_num_classes
    return Loaded(found.path, fit_classifier(model, num_classes, str(found.path)), found.checkpoint)


def from_record(
    record: ModelRecord,
    state: Mapping[str, torch.Tensor] | None = None,
    source: PathLike = "",
) -> nn.Module:
    """The network ``record`` describes, carrying it, with ``state`` (read from ``source``)
    loaded into it if given."""
    model = build(record.name, record.num_classes, record.kwargs)
    model.record = record
    if state is not None:
        load_state_into(model, state, source)
    return model


def load_pretrained(path: PathLike, **overrides: Any) -> nn.Module:
    """The network saved at ``path``, with its weights: anything :mod:`sknet.models.locate`
    reads (our weights folder or file, a training run's folder or ``last.pt``, timm's weights,
    LSKNet's official checkpoints).

    ``overrides`` must not change the shapes, except ``num_classes`` (a new classifier on the
    pretrained backbone); ``model.record`` holds the class names and preprocessing.
    """
    return load(path, **overrides).model


from_pretrained = load_pretrained
"""The same function under the name that Hugging Face and timm users look for."""


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
            when known, else :data:`~sknet.preprocessing.TIMM_IMAGENET`).
        **kwargs: overrides of our model's config (e.g. ``branches`` for a timm SK model built
            with other kernels).

    Returns:
        The model (train mode, like :func:`create_model`); ``model.record`` holds the class
        names and preprocessing, so ``model.save_pretrained(folder)`` writes a folder that
        rebuilds it.

    Raises:
        sknet.errors.UserError: the weights do not fit (the message names the first offending
            key), or a timm model's layer geometry (stride, padding, dilation, groups) differs
            from ours.
        FileNotFoundError: no weights at ``source``.
    """
    if isinstance(source, nn.Module):
        label = f"timm model {type(source).__name__}"
        model = _timm_model(
            dict(source.state_dict()), module_config(source), label, name, source,
            class_names=class_names, preprocessing=preprocessing, **kwargs,
        )
    elif isinstance(source, Mapping):
        label = "timm state dict"
        state = plain_state(source, label)
        check_tensors(state, label)
        model = _timm_model(
            state, {}, label, name, None, class_names=class_names,
            preprocessing=preprocessing, **kwargs,
        )
    else:
        found = locate(source)
        if found.record is not None:
            raise UserError(
                f"{source}: these are not timm's weights but sknet's own or LSKNet's; use "
                "sknet.load_pretrained"
            )
        label = str(found.path)
        model = _timm_model(
            found.state, found.timm_config or {}, label, name, None, class_names=class_names,
            preprocessing=preprocessing, **kwargs,
        )
    return fit_classifier(model, num_classes, label)


def _timm_model(
    state: dict[str, torch.Tensor],
    config: Mapping[str, Any],
    label: str,
    name: str | None,
    timm_model: nn.Module | None,
    *,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Our counterpart of timm's weights ``state`` (timm's ``config`` beside them), loaded."""
    if any(key.startswith(("stem.", "stages.")) for key in state):
        raise UserError(
            f"{label}: these are sknet's own key names (stem.*, stages.*), not timm's, and no "
            "sknet config.json is beside them; released weights need it (sknet.save_pretrained), "
            "a training last.pt is read by sknet eval or train --resume"
        )
    architecture = config.get("architecture")
    if architecture is not None and architecture in TIMM_ARCHITECTURES:
        label = f"{label} (timm's {architecture})"
    head = state.get("fc.weight")
    stem = state.get("conv1.weight", state.get("conv1.0.weight"))  # the deep stem's first conv
    classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 0
    if stem is not None and stem.ndim == 4 and stem.shape[1] != 3 and "in_chans" not in kwargs:
        kwargs["in_chans"] = int(stem.shape[1])
    name = _timm_counterpart(name, architecture, state, classes, kwargs, label)
    model = build(name, classes, kwargs)
    names = timm_names(model)
    try:
        converted = to_ours(state, names, model.state_dict(), name)
    except WeightsMismatch as error:
        raise UserError(f"{label}: {error}") from None
    model.load_state_dict(converted)
    if timm_model is not None:
        check_geometry(timm_model, model, names, label)
    recorded = timm_class_names(class_names, config, classes)
    model.record = replace(
        model.record,
        class_names=None if recorded is None else tuple(recorded),
        preprocessing=resolve_preprocessing(timm_preprocessing(config), None, preprocessing),
        extra={
            "timm_architecture": architecture,
            **({"license": str(licence)} if (licence := _timm_licence(config)) else {}),
        },
    )
    return model


def _timm_licence(config: Mapping[str, Any]) -> str | None:
    """The licence timm's config gives its weights, if any."""
    pretrained_cfg = config.get("pretrained_cfg", config)
    return config.get("license") or (pretrained_cfg or {}).get("license")


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
            raise UserError(
                f"{label} holds the weights of our {counterpart!r}, not {name!r}; build "
                f"{counterpart!r} (or leave the name out)"
            )
        return name
    if counterpart is not None:
        return counterpart
    failures = {}
    for candidate in dict.fromkeys(TIMM_ARCHITECTURES.values()):
        with torch.device("meta"):
            model = build(candidate, classes, kwargs)
        try:
            to_ours(state, timm_names(model), model.state_dict(), candidate)
        except WeightsMismatch as error:
            failures[candidate] = error
            continue
        return candidate
    # The candidate with the most matching keys has the most telling first mismatch.
    closest = max(failures, key=lambda candidate: failures[candidate].mismatch.fitted)
    raise UserError(
        f"{label}: these weights fit none of our models with a timm counterpart; the closest: "
        f"{failures[closest]}; pass name=... if they are of another of our models"
    )
