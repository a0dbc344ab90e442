"""timm's weights in our models, and ours in timm's: the name map between the two layouts.

A pure translation of state dicts and of timm's configs; :func:`sknet.models.factory.from_timm`
builds the model and loads what this module translates.

timm's ResNet family and our :class:`~sknet.models.ResNeXt` compute the same network for the
architectures in :data:`TIMM_ARCHITECTURES` (the tests check it output for output): the same
layers in the same order, the stride in the middle convolution, "same" padding, the stem's
7x7/2 conv and padded 3x3/2 max-pool. Only the names differ (ours -> timm's):

* ``stem.0.conv``, ``stem.0.bn`` -> ``conv1``, ``bn1``; ``fc`` -> ``fc``; the deep stem's three
  conv + BN (``stem.{0,1,2}``) -> ``conv1.0``/``conv1.1``, ``conv1.3``/``conv1.4``,
  ``conv1.6``/``bn1`` (timm's ``conv1`` is a sequence with the activations at 2 and 5);
* ``stages.{i}.{j}`` -> ``layer{i+1}.{j}``, and in each block:
* ResNet, ResNeXt and SE blocks: ``conv{k}.conv``, ``conv{k}.bn`` -> ``conv{k}``, ``bn{k}``;
* SK blocks: the plain convolutions keep their names (``conv{k}.conv``, ``conv{k}.bn``); in the
  SK one (``conv2`` of a bottleneck, ``conv1`` of a basic block) ``branches.{m}`` ->
  ``paths.{m}`` (the same order: 3x3, then 3x3 with dilation 2), ``attention.fuse.conv``/``.bn``
  -> ``attn.fc_reduce``/``attn.bn`` (Eq. 3), ``attention.select`` -> ``attn.fc_select`` (one 1x1
  conv to M*C logits, read as [M, C] by both);
* split-attention blocks (ResNeSt): ``conv2.splits.conv``/``.bn`` -> ``conv2.conv``/``bn0``,
  ``conv2.attention.reduce.conv``/``.reduce.bn``/``.expand`` -> ``conv2.fc1``/``bn1``/``fc2``;
  the plain convolutions as in ResNet blocks;
* ``downsample.conv``/``.bn`` -> ``downsample.0``/``.1``, or with ``avg_down`` (whose pool is
  timm's ``downsample.0``, an identity at stride 1) ``downsample.1``/``.2``; ``se.fc1``,
  ``se.fc2`` unchanged.

timm's SK attention is ours: it pools the sum of the branches, reduces to
``d = max(C/16, 32)`` channels (its ``make_divisible(C/16, 32)`` gives the same for every width
of these models), applies BN and ReLU, and takes a softmax over the branch axis; our two-branch
Select (``U_2 + a_1 (U_1 - U_2)``) is the same sum rearranged. Its SK-ResNet-18/34 are our basic
blocks with SK in the first 3x3: ungrouped branches, each reading half of the input channels
(``split_input``), and ``d = make_divisible(C/8, 16)``, which is our ``max(C/8, 16)`` for their
widths 64-512. Its SE is ours too (``C -> C/16 -> C`` 1x1 convs with bias, ReLU, sigmoid, on the
block output before the shortcut). timm's ``legacy_*`` SENets are not: their stem pools with
``ceil_mode`` and no padding.

timm's ResNeSt is our backbone with its ResNeSt options: its ``SplitAttn`` is our
:class:`~sknet.layers.SplitAttentionConv` (the same attention width rule, grouped ``fc1``/``fc2``
with biases, the same channel order), its deep stem ours, its ``avg_down`` shortcut ours (2x2
average pool, ceil mode, padding not counted), its ``avd`` pool ours (3x3, padding 1 counted, only
in strided blocks: timm never marks a block ``is_first``), ``avd_first`` our ``avd="before"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sknet.errors import UserError
from sknet.layers import SKConv, SplitAttentionConv
from sknet.models.resnext import ResNeXt
from sknet.models.weights_io import (
    CONFIG_NAME,
    Mismatch,
    model_name,
    read_json,
    read_torch_file,
    read_weights,
    unwrap,
)
from sknet.models.zoo_resnest import RESNEST_MODELS

TIMM_ARCHITECTURES: dict[str, str] = {
    "skresnext50_32x4d": "sknet50",
    "resnext50_32x4d": "resnext50_32x4d",
    "resnext101_32x4d": "resnext101_32x4d",
    "seresnext50_32x4d": "seresnext50_32x4d",
    "seresnext101_32x4d": "seresnext101_32x4d",
    "skresnet18": "skresnet18",
    "skresnet34": "skresnet34",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    **{name: name for name in RESNEST_MODELS},
}
"""timm architecture -> our model that computes the same network (checked by the tests). Weights
without a name are matched against these in this order: each candidate is built (on the meta
device) until one fits."""

_SUPPORTED = "timm import/export covers the ImageNet ResNet-family models: " + ", ".join(
    f"{ours} (timm's {theirs})" for theirs, ours in TIMM_ARCHITECTURES.items()
)

TIMM_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
"""Weight files of a timm folder (as the Hugging Face hub holds them), in order of preference."""

WRAPPER_KEYS = ("state_dict", "model")
"""Keys under which training checkpoints nest the state dict."""

STRIPPED_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes that DistributedDataParallel and ``torch.compile`` add to every key."""

_STEMS = {
    "imagenet": ((r"stem\.0\.conv\.", "conv1."), (r"stem\.0\.bn\.", "bn1.")),
    "deep": (
        (r"stem\.0\.conv\.", "conv1.0."),
        (r"stem\.0\.bn\.", "conv1.1."),
        (r"stem\.1\.conv\.", "conv1.3."),
        (r"stem\.1\.bn\.", "conv1.4."),
        (r"stem\.2\.conv\.", "conv1.6."),
        (r"stem\.2\.bn\.", "bn1."),
    ),
}
_HEAD = ((r"fc\.", "fc."),)
_SHORTCUTS = {
    False: ((r"downsample\.conv\.", "downsample.0."), (r"downsample\.bn\.", "downsample.1.")),
    True: ((r"downsample\.conv\.", "downsample.1."), (r"downsample\.bn\.", "downsample.2.")),
}
_SE = ((r"se\.(fc[12])\.", r"se.\1."),)
_PLAIN_CONVS = (
    (r"conv(\d)\.conv\.", r"conv\1."),
    (r"conv(\d)\.bn\.", r"bn\1."),
)
_SK_CONVS = (
    (r"conv(\d)\.(conv|bn)\.", r"conv\1.\2."),
    (r"conv(\d)\.branches\.(\d+)\.(conv|bn)\.", r"conv\1.paths.\2.\3."),
    (r"conv(\d)\.attention\.fuse\.conv\.", r"conv\1.attn.fc_reduce."),
    (r"conv(\d)\.attention\.fuse\.bn\.", r"conv\1.attn.bn."),
    (r"conv(\d)\.attention\.select\.", r"conv\1.attn.fc_select."),
)
_SPLIT_ATTENTION_CONVS = (
    (r"conv(\d)\.splits\.conv\.", r"conv\1.conv."),
    (r"conv(\d)\.splits\.bn\.", r"conv\1.bn0."),
    (r"conv(\d)\.attention\.reduce\.conv\.", r"conv\1.fc1."),
    (r"conv(\d)\.attention\.reduce\.bn\.", r"conv\1.bn1."),
    (r"conv(\d)\.attention\.expand\.", r"conv\1.fc2."),
    *_PLAIN_CONVS,
)
_BLOCK = re.compile(r"stages\.(\d+)\.(\d+)\.(.*)")
StateDict = dict[str, torch.Tensor]


class WeightsMismatch(ValueError):
    """timm weights that do not fit one of our models; ``mismatch`` says how."""

    def __init__(self, message: str, mismatch: Mismatch) -> None:
        super().__init__(message)
        self.mismatch = mismatch


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
    name = model_name(model)
    if not isinstance(model, ResNeXt):
        raise UserError(f"model {name!r} has no timm counterpart: {_SUPPORTED}")
    top_rules = (*_STEMS.get(model.stem_type, ()), *_HEAD)
    block_rules = (*_block_convs(model), *_SHORTCUTS[model.avg_down], *_SE)
    names = {}
    for key in model.state_dict():
        block = _BLOCK.fullmatch(key)
        if block:
            renamed = _rename(block[3], block_rules)
            if renamed is not None:
                renamed = f"layer{int(block[1]) + 1}.{block[2]}.{renamed}"
        else:
            renamed = _rename(key, top_rules)
        if renamed is None:
            raise UserError(
                f"model {name!r}: its key {key!r} has no counterpart in timm's ResNet; {_SUPPORTED}"
            )
        names[key] = renamed
    return names


def _block_convs(model: ResNeXt) -> tuple[tuple[str, str], ...]:
    """The renaming of a block's convolutions: by the kind of its selection unit, if any."""
    for unit, rules in ((SKConv, _SK_CONVS), (SplitAttentionConv, _SPLIT_ATTENTION_CONVS)):
        if any(isinstance(module, unit) for module in model.modules()):
            return rules
    return _PLAIN_CONVS


def to_timm(model: nn.Module) -> StateDict:
    """``model``'s state dict under timm's names, for ``timm_model.load_state_dict``.

    The tensors are the model's own (not copies). :data:`TIMM_ARCHITECTURES` says which timm
    architecture to build; its ``num_classes`` (and ``in_chans``) must be the model's.
    """
    names = timm_names(model)
    return {names[key]: value for key, value in unwrap(model).state_dict().items()}


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
            return "architecture" in read_json(config)
        return any((path / weights).exists() for weights in TIMM_WEIGHT_NAMES)
    if path.suffix == ".safetensors":
        if path.with_suffix(".json").exists():
            return False
        config = path.parent / CONFIG_NAME
        if config.exists():
            return "architecture" in read_json(config)
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
    if path.suffix == ".safetensors":
        loaded: Any = read_weights(path)
    else:
        loaded = read_torch_file(
            path, "weights file", hint="safetensors, or a torch.save file of tensors only"
        )
    config_path = folder / CONFIG_NAME
    config = read_json(config_path) if config_path.exists() else {}
    return plain_state(loaded, str(path)), config if "architecture" in config else {}


def plain_state(loaded: Any, label: str) -> StateDict:
    """A flat name -> value dict: unnested from a checkpoint, without wrapper prefixes (its
    tensors are checked once by the caller: :func:`~sknet.models.weights_io.check_tensors`)."""
    for key in WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not loaded:
        raise UserError(f"{label}: not a state dict (expected a mapping of names to tensors)")
    state = dict(loaded)
    for prefix in STRIPPED_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def module_config(timm_model: nn.Module) -> dict[str, Any]:
    """A timm model's pretrained config, shaped like the ``config.json`` of a timm folder."""
    pretrained_cfg = dict(getattr(timm_model, "pretrained_cfg", None) or {})
    return {"architecture": pretrained_cfg.get("architecture"), "pretrained_cfg": pretrained_cfg}


def to_ours(
    state: Mapping[str, torch.Tensor], names: Mapping[str, str], own: Mapping[str, torch.Tensor],
    name: str,
) -> StateDict:
    """``state`` (timm's names) under our names; missing ``num_batches_tracked`` are kept ours.

    Args:
        state: timm's state dict.
        names: our key -> timm's (:func:`timm_names`).
        own: our model's state dict (its shapes, and the batch counters timm may lack).
        name: our model's name, for the message.

    Raises:
        WeightsMismatch: naming the first key (in ``state``'s order, batch counters last) that
            does not fit.
    """
    mismatch = Mismatch.of(state, own, names, counters_optional=True)
    if mismatch is not None:
        message = f"{mismatch.first_offence(name, 'timm key')}; {_hint(name)}"
        raise WeightsMismatch(message, mismatch)
    ours_of = {theirs: ours for ours, theirs in names.items()}
    converted = {ours_of[key]: value for key, value in state.items()}
    return {key: converted.get(key, value) for key, value in own.items()}


def _hint(name: str) -> str:
    matching = [theirs for theirs, ours in TIMM_ARCHITECTURES.items() if ours == name]
    if matching:
        return f"our {name!r} takes the weights of timm's {' or '.join(matching)}"
    return _SUPPORTED


def check_geometry(
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
                raise UserError(
                    f"{label}: {theirs_name} has {attribute} {getattr(theirs, attribute, None)}, "
                    f"our {module_name} {getattr(module, attribute)}: not the same network; "
                    "pass our config's overrides (e.g. branches=...) that match it"
                )


def timm_class_names(
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
