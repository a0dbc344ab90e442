"""LSKNet's published checkpoints (github.com/zcablii/LSKNet) read into our
:class:`~sknet.models.LSKNet`: the official key names and the two layouts they come in.

A pure translation of state dicts (:mod:`sknet.models.locate` reads the file with
``torch.load(weights_only=True)``; :mod:`sknet.models.factory` builds and loads), no mmcv:

* the ImageNet backbones ``lsk_t_backbone.pth.tar`` / ``lsk_s_backbone.pth.tar``: a checkpoint
  whose ``state_dict`` holds the official classifier's keys, with or without its ``head``;
* mmrotate detector checkpoints: a ``state_dict`` whose backbone keys start with ``backbone.``;
  the neck's and heads' tensors (and anything else outside ``backbone.``) are ignored, with one
  log line that counts them.

Official key -> ours, stage ``i`` (1-4) -> ``stages.{i-1}``:

* ``patch_embed{i}.proj``/``.norm`` -> ``embed.proj``/``embed.norm``; ``norm{i}`` -> ``norm``;
* ``block{i}.{j}`` -> ``blocks.{j}``, in which ``norm1``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``
  keep their names, ``mlp.dwconv.dwconv`` -> ``mlp.dwconv``, ``attn.proj_1``/``attn.proj_2`` ->
  ``attn.proj_in``/``attn.proj_out``, ``layer_scale_1``/``layer_scale_2`` ->
  ``attn_scale``/``mlp_scale``, and the LSK unit ``attn.spatial_gating_unit`` -> ``attn.lsk``:
  ``conv0``, ``conv_spatial`` -> ``depthwise.0``, ``depthwise.1``; ``conv1``, ``conv2`` ->
  ``reduce.0``, ``reduce.1``; ``conv_squeeze`` -> ``attention.squeeze``; ``conv`` -> ``expand``;
* ``head`` -> ``fc``.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sknet.errors import UserError
from sknet.models.lsknet import LSKNet
from sknet.models.registry import get_entry
from sknet.models.zoo_lsknet import LSKNET_MODELS
from sknet.record import ModelRecord

LOG = logging.getLogger("sknet")

DETECTOR_PREFIX = "backbone."
"""Where an mmrotate detector keeps its backbone's tensors."""

_BLOCK_RULES = (
    (r"(norm[12]|mlp\.fc[12])\.", r"\1."),
    (r"mlp\.dwconv\.dwconv\.", "mlp.dwconv."),
    (r"attn\.proj_1\.", "attn.proj_in."),
    (r"attn\.proj_2\.", "attn.proj_out."),
    (r"layer_scale_1$", "attn_scale"),
    (r"layer_scale_2$", "mlp_scale"),
    (r"attn\.spatial_gating_unit\.conv0\.", "attn.lsk.depthwise.0."),
    (r"attn\.spatial_gating_unit\.conv_spatial\.", "attn.lsk.depthwise.1."),
    (r"attn\.spatial_gating_unit\.conv1\.", "attn.lsk.reduce.0."),
    (r"attn\.spatial_gating_unit\.conv2\.", "attn.lsk.reduce.1."),
    (r"attn\.spatial_gating_unit\.conv_squeeze\.", "attn.lsk.attention.squeeze."),
    (r"attn\.spatial_gating_unit\.conv\.", "attn.lsk.expand."),
)
_STAGE_KEY = re.compile(r"(patch_embed|block|norm)([1-9])\.(.+)")
_PARAMETER = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class OfficialWeights:
    """An official checkpoint's backbone (and classifier, if it has one) under our names.

    Attributes:
        state: the tensors, under our key names.
        record: the registered model they are (kwargs where the widths differ), the classifier
            in the file (0 outputs: none) and LSKNet's ImageNet preprocessing.
        backbone_only: the file holds no classifier.
    """

    state: StateDict
    record: ModelRecord
    backbone_only: bool


def recognises(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is in one of LSKNet's layouts (its first patch embedding is there)."""
    return any(
        key.removeprefix(DETECTOR_PREFIX).startswith("patch_embed1.proj.") for key in state
    )


def takes_official(name: str) -> bool:
    """Whether the registered model ``name`` is an LSKNet (reads the official checkpoints)."""
    return issubclass(get_entry(name).builder, LSKNet)


def ours(key: str) -> str | None:
    """Our name of an official backbone or classifier key, or ``None`` if it has none."""
    if re.fullmatch(r"head\.(weight|bias)", key):
        return f"fc.{key.removeprefix('head.')}"
    stage = _STAGE_KEY.fullmatch(key)
    if stage is None:
        return None
    kind, index, rest = stage[1], int(stage[2]) - 1, stage[3]
    if kind == "patch_embed":
        found = re.fullmatch(rf"(proj|norm)\.{_PARAMETER}", rest)
        return f"stages.{index}.embed.{rest}" if found else None
    if kind == "norm":
        return f"stages.{index}.norm.{rest}" if rest in ("weight", "bias") else None
    block = re.fullmatch(r"(\d+)\.(.+)", rest)
    if block is None:
        return None
    for pattern, replacement in _BLOCK_RULES:
        renamed, count = re.subn(f"^{pattern}", replacement, block[2])
        if count and (renamed.endswith("_scale") or re.search(rf"\.{_PARAMETER}$", renamed)):
            return f"stages.{index}.blocks.{block[1]}.{renamed}"
    return None


def _translated(state: Mapping[str, torch.Tensor], label: str) -> tuple[bool, dict[str, Any]]:
    """Whether ``state`` is a detector's, and its backbone (and classifier) under our names.

    Raises:
        sknet.errors.UserError: a key that is neither an ImageNet backbone's nor, in a
            detector's file, a ``backbone.`` one (the first such key is named).
    """
    detector = any(key.startswith(DETECTOR_PREFIX) for key in state)
    translated = {}
    for key, value in state.items():
        if detector and not key.startswith(DETECTOR_PREFIX):
            continue  # the detector's neck and heads
        renamed = ours(key.removeprefix(DETECTOR_PREFIX) if detector else key)
        if renamed is None:
            raise UserError(
                f"{label}: not an LSKNet checkpoint: key {key!r} is neither an ImageNet "
                "backbone's (patch_embed*, block*, norm*, head) nor an mmrotate detector "
                "backbone's (backbone.patch_embed*, ...); pass LSKNet's lsk_*_backbone.pth.tar "
                "or an mmrotate LSKNet detector checkpoint"
            )
        translated[renamed] = value
    return detector, translated


def require_official(state: Mapping[str, torch.Tensor], label: str) -> None:
    """Refuse a state dict that an LSKNet model is asked to load but that is not a whole
    checkpoint in one of LSKNet's layouts: its first foreign key is named, or, with none, the
    stages it lacks (raises :class:`~sknet.errors.UserError`)."""
    _model_of(_translated(state, label)[1], label)


def from_official(state: Mapping[str, torch.Tensor], label: str) -> OfficialWeights:
    """Translate an official checkpoint's state dict (either layout) to our names.

    Args:
        state: the checkpoint's ``state_dict`` (unwrapped, ``module.`` prefixes removed).
        label: the file, for messages.

    Raises:
        sknet.errors.UserError: as :func:`require_official`.
    """
    detector, translated = _translated(state, label)
    if detector and len(state) > len(translated):
        LOG.warning(
            "%s: an mmrotate detector checkpoint: loaded its backbone (%d tensors), ignored %d "
            "tensors of its neck and heads", label, len(translated), len(state) - len(translated),
        )
    name, kwargs = _model_of(translated, label)
    head = translated.get("fc.weight")
    classes = int(head.shape[0]) if head is not None else 0
    source = "mmrotate detector (its backbone)" if detector else "ImageNet backbone"
    record = ModelRecord(
        name, kwargs, classes, None, get_entry(name).preprocessing,
        extra={"lsknet_checkpoint": source},
    )
    return OfficialWeights(translated, record, head is None)


def _model_of(state: Mapping[str, torch.Tensor], label: str) -> tuple[str, dict[str, Any]]:
    """The registered LSKNet whose widths, depths and MLP ratios ``state`` has (else LSKNet-S
    with those as overrides)."""
    dims, depths, ratios = [], [], []
    while f"stages.{len(dims)}.embed.proj.weight" in state:
        stage = len(dims)
        dims.append(int(state[f"stages.{stage}.embed.proj.weight"].shape[0]))
        blocks = {
            int(key.split(".")[3]) for key in state if key.startswith(f"stages.{stage}.blocks.")
        }
        depths.append(max(blocks) + 1 if blocks else 0)
        hidden = state.get(f"stages.{stage}.blocks.0.mlp.fc1.weight")
        ratio = hidden.shape[0] / dims[-1] if hidden is not None else 0
        ratios.append(int(ratio) if float(ratio).is_integer() else ratio)
    shape = {"embed_dims": tuple(dims), "depths": tuple(depths), "mlp_ratios": tuple(ratios)}
    if not dims or 0 in depths or 0 in ratios:
        raise UserError(
            f"{label}: an incomplete LSKNet checkpoint: stages {shape['embed_dims']} with "
            f"{shape['depths']} blocks; a stage without blocks or MLP; pass a whole "
            "lsk_*_backbone.pth.tar or mmrotate LSKNet detector checkpoint"
        )
    for name in LSKNET_MODELS:
        if _config(name) == shape:
            return name, {}
    fallback = LSKNET_MODELS[-1]
    config = _config(fallback)
    return fallback, {key: value for key, value in shape.items() if config[key] != value}


def _config(name: str) -> dict[str, tuple[Any, ...]]:
    """A registered LSKNet's widths, depths and MLP ratios (the builder's defaults filled in)."""
    config, defaults = get_entry(name).config, inspect.signature(LSKNet).parameters
    return {
        key: tuple(config.get(key, defaults[key].default))
        for key in ("embed_dims", "depths", "mlp_ratios")
    }
