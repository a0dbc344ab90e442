"""What every sknet network shares: the timm-style interface and the SK unit naming."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sknet.errors import UserError
from sknet.layers import SELECTION_UNITS, ConvBnAct, init_weights
from sknet.models.release import save_pretrained
from sknet.models.weights_io import model_name


class Backbone(nn.Module):
    """A classifier made of ``stem``, ``stages`` (one ``nn.Sequential`` of blocks each) and ``fc``.

    A stage is an ``nn.Sequential`` of blocks, or a module whose ``blocks`` attribute is one
    (a stage with its own entry and exit layers, as LSKNet's patch embedding and norm).
    Subclasses build those three attributes and set ``num_features`` (channels entering the
    classifier) and ``feature_info``: one dict (``channels``, ``reduction``, ``name``) per feature
    level, the stem's first (if it has one) then one per stage (see :class:`FeatureExtractor`).
    The stem level is the output of the module ``name`` (``"stem"`` or ``"stem.K"``, a child of
    an ``nn.Sequential`` stem, taken before the stem's max-pool). They inherit the uniform
    interface: :meth:`forward_features`, :meth:`forward_head`, :meth:`reset_classifier` and
    :meth:`sk_units`.
    """

    stem: nn.Module
    stages: nn.ModuleList
    fc: nn.Module
    num_features: int
    feature_info: list[dict[str, int | str]]
    first_stage_index = 2
    """Paper numbering of ``stages[0]``: conv1 is the stem, so the first stage is conv2."""

    @property
    def num_classes(self) -> int:
        return self.fc.out_features if isinstance(self.fc, nn.Linear) else 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: the unpooled feature map [N, num_features, H/32, W/32]."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool and the classifier (skipped with ``pre_logits``)."""
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The classifier module (``nn.Identity`` after ``reset_classifier(0)``), as timm's."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one (``0`` gives pooled features).

        ``record`` follows (the new class count, no class names yet), so that
        :meth:`save_pretrained` records what the classifier is.
        """
        self.fc = _classifier(self.num_features, num_classes)
        record = getattr(self, "record", None)
        if record is not None:
            self.record = record.with_classes(num_classes)

    def _finish(self, num_features: int, num_classes: int) -> None:
        """Add the classifier on ``num_features`` pooled channels, then He-initialise the
        convolutions (Section 4.1); subclasses call it last, after the stem and stages."""
        self.num_features = num_features
        self.fc = _classifier(num_features, num_classes)
        init_weights(self)

    def save_pretrained(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        """:func:`sknet.save_pretrained` of this model: ``model.safetensors``, ``config.json`` and
        the card ``README.md`` in the folder ``path`` (or ``X.safetensors`` + ``X.json``);
        returns the weights path."""
        return save_pretrained(self, path, **kwargs)

    def sk_units(self) -> dict[str, nn.Module]:
        """Every selection unit (any of :data:`~sknet.layers.SELECTION_UNITS`: an SK convolution,
        a split-attention convolution, an LSK unit), named ``SK_{stage}_{block}`` (stage from
        :attr:`first_stage_index`, block from 1). The name is the paper's convention for SK units
        and stands for any selection unit: each has an ``attention`` submodule whose output is its
        weights (``[N, choices, C]``; LSK's spatial ``[N, M, H, W]``).

        A block holding several units (e.g. both branches of a ShuffleNetV2 down-sampling unit)
        names them ``SK_{stage}_{block}``, ``SK_{stage}_{block}b``, ...
        """
        units: dict[str, nn.Module] = {}
        for stage_offset, stage in enumerate(self.stages):
            for block_index, block in enumerate(getattr(stage, "blocks", stage), start=1):
                found = [m for m in block.modules() if isinstance(m, SELECTION_UNITS)]
                for position, unit in enumerate(found):
                    suffix = "" if position == 0 else chr(ord("a") + position)
                    name = f"SK_{self.first_stage_index + stage_offset}_{block_index}{suffix}"
                    units[name] = unit
        return units


def _classifier(features: int, num_classes: int) -> nn.Module:
    """The fc layer on pooled features, or ``nn.Identity`` for ``num_classes=0``."""
    return nn.Linear(features, num_classes) if num_classes > 0 else nn.Identity()


def conv_pool_stem(
    in_chans: int, channels: int, kernel: int
) -> tuple[nn.Sequential, dict[str, int | str]]:
    """The ImageNet stem: ``kernel x kernel``/2 conv + BN + ReLU, then a padded 3x3/2 max-pool;
    and its feature level (stride 2, the conv's output, before the pool)."""
    stem = nn.Sequential(
        ConvBnAct(in_chans, channels, kernel, stride=2),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    return stem, {"channels": channels, "reduction": 2, "name": "stem.0"}


def stage_level(index: int, channels: int, reduction: int) -> dict[str, int | str]:
    """The feature level of ``stages[index]``: its output channels and stride."""
    return {"channels": channels, "reduction": reduction, "name": f"stages.{index}"}


class FeatureInfo:
    """The feature maps of a ``features_only`` model: channels, reduction and source, per output.

    Iterating gives one dict per output (``channels``, ``reduction``: the input side over the
    map's side, ``name``: the module whose output it is, ``index``: its feature level).
    """

    def __init__(self, levels: Sequence[Mapping[str, int | str]]) -> None:
        self._levels = [dict(level) for level in levels]

    def channels(self) -> list[int]:
        """Channels of each output."""
        return [int(level["channels"]) for level in self._levels]

    def reduction(self) -> list[int]:
        """Stride of each output relative to the input (4 means H/4 x W/4)."""
        return [int(level["reduction"]) for level in self._levels]

    def module_name(self) -> list[str]:
        """The module whose output each output is, e.g. ``"stages.1"``."""
        return [str(level["name"]) for level in self._levels]

    def __len__(self) -> int:
        return len(self._levels)

    def __iter__(self) -> Iterator[dict[str, int | str]]:
        return iter(self._levels)

    def __getitem__(self, position: int) -> dict[str, int | str]:
        return self._levels[position]

    def __repr__(self) -> str:
        return f"FeatureInfo({self._levels})"


def resolve_out_indices(
    out_indices: Sequence[int], levels: Sequence[Mapping[str, int | str]], name: str
) -> list[int]:
    """Check ``out_indices`` against the feature ``levels`` of model ``name``; negative indices
    count from the deepest. Returns them non-negative and strictly increasing, as given."""
    if isinstance(out_indices, int) or not all(
        isinstance(index, int) and not isinstance(index, bool) for index in out_indices
    ):
        raise UserError(
            f"{name}: out_indices must be a sequence of ints (feature levels), got {out_indices!r}"
        )
    count = len(levels)
    resolved = [index + count if index < 0 else index for index in out_indices]
    if not resolved or any(not 0 <= index < count for index in resolved):
        available = ", ".join(
            f"{index} (stride {level['reduction']}, {level['channels']} ch)"
            for index, level in enumerate(levels)
        )
        raise UserError(
            f"{name}: out_indices {tuple(out_indices)} out of range; its feature levels are "
            f"{available} (negative indices count from the deepest)"
        )
    if any(later <= earlier for earlier, later in itertools.pairwise(resolved)):
        raise UserError(
            f"{name}: out_indices {tuple(out_indices)} must be strictly increasing (shallow to "
            "deep), without repeats"
        )
    return resolved


class FeatureExtractor(nn.Module):
    """``features_only`` view of a :class:`Backbone`: a list of feature maps, shallow to deep.

    Feature levels (the backbone's ``feature_info``): where the model has a stem level, 0 is the
    stem's first convolution, before its max-pool (stride 2 for ImageNet models, as in timm's
    ResNets), and level ``k >= 1`` is the output of stage ``k`` (paper stage ``k + 1``; strides 4,
    8, 16, 32 for the ImageNet ResNeXt family). A model without one (its first level is a stage,
    as LSKNet's, whose patch embeddings belong to the stages) has level ``k`` for stage ``k + 1``.
    ``out_indices`` picks levels (default: every stage); stages after the last one picked are
    left out (not run, not held). Parameter names stay those of the backbone (``stem.*``,
    ``stages.*``); :class:`~sknet.models.detection.FeatureSequence` holds the same
    :meth:`layers` as direct children, for torchvision's ``BackboneWithFPN``.

    Args:
        model: the backbone (its classifier is dropped).
        out_indices: feature levels to return, strictly increasing; negative ones count from
            the deepest.
    """

    def __init__(self, model: Backbone, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        levels = model.feature_info
        name = model_name(model)
        stem_name = str(levels[0]["name"])
        stem_levels = int(stem_name == "stem" or stem_name.startswith("stem."))
        indices = (
            list(range(stem_levels, len(levels)))
            if out_indices is None
            else resolve_out_indices(out_indices, levels, name)
        )
        self.out_indices = tuple(indices)
        self.feature_info = FeatureInfo([{**levels[i], "index": i} for i in indices])
        self.stem = model.stem
        self.stages = nn.ModuleList(list(model.stages)[: max(indices) + 1 - stem_levels])
        self._split_stem = stem_name.startswith("stem.")
        layers = [layer for layer, _ in self.layers()]
        unknown = [level for level in self.feature_info.module_name() if level not in layers]
        if unknown:
            raise ValueError(f"{name}: feature levels {unknown} name none of the layers {layers}")

    def layers(self) -> list[tuple[str, nn.Module]]:
        """The modules that compute the features, by name, in the order they run: the stem (its
        children ``stem.0``, ``stem.1``, ... when the stem level is inside it), then
        ``stages.0``, ... Each feature map is the output of the layer ``feature_info`` names."""
        stem = (
            [(f"stem.{name}", module) for name, module in self.stem.named_children()]
            if self._split_stem
            else [("stem", self.stem)]
        )
        return stem + [(f"stages.{index}", stage) for index, stage in enumerate(self.stages)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_layers(self.layers(), self.feature_info.module_name(), x)


def run_layers(
    layers: Iterable[tuple[str, nn.Module]], taps: Sequence[str], x: torch.Tensor
) -> list[torch.Tensor]:
    """Run the named ``layers`` in turn on ``x``; the outputs of those named in ``taps``."""
    features = []
    for name, module in layers:
        x = module(x)
        if name in taps:
            features.append(x)
    return features
