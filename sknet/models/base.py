"""What every sknet network shares: the timm-style interface and the SK unit naming."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sknet.layers import SKConv


class Backbone(nn.Module):
    """A classifier made of ``stem``, ``stages`` (one ``nn.Sequential`` of blocks each) and ``fc``.

    Subclasses build those three attributes and set ``num_features`` (channels entering the
    classifier) and ``feature_info`` (one dict per stage: ``channels``, ``reduction``, ``name``).
    They inherit the uniform interface: :meth:`forward_features`, :meth:`forward_head`,
    :meth:`reset_classifier` and :meth:`sk_units`.
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

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one (``0`` gives pooled features).

        ``config`` follows, so that :meth:`save_pretrained` records the new class count.
        """
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if getattr(self, "config", None):
            self.config["num_classes"] = num_classes

    def save_pretrained(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        """:func:`sknet.save_pretrained` of this model: ``model.safetensors`` + ``config.json``
        in the folder ``path`` (or ``X.safetensors`` + ``X.json``); returns the weights path."""
        from sknet.models.pretrained import save_pretrained  # imports the registry, hence this

        return save_pretrained(self, path, **kwargs)

    def sk_units(self) -> dict[str, SKConv]:
        """Every SK convolution, named ``SK_{stage}_{block}`` (stage from 2, block from 1).

        A block holding several SK convolutions (e.g. both branches of a ShuffleNetV2
        down-sampling unit) names them ``SK_{stage}_{block}``, ``SK_{stage}_{block}b``, ...
        """
        units: dict[str, SKConv] = {}
        for stage_offset, stage in enumerate(self.stages):
            for block_index, block in enumerate(stage, start=1):
                found = [m for m in block.modules() if isinstance(m, SKConv)]
                for position, unit in enumerate(found):
                    suffix = "" if position == 0 else chr(ord("a") + position)
                    name = f"SK_{self.first_stage_index + stage_offset}_{block_index}{suffix}"
                    units[name] = unit
        return units


def init_weights(model: nn.Module) -> None:
    """He initialisation (Section 4.1): Kaiming-normal convs (fan-out), BN to identity."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class FeatureExtractor(nn.Module):
    """``features_only`` view of a :class:`Backbone`: returns the output of every stage."""

    def __init__(self, model: Backbone) -> None:
        super().__init__()
        self.stem = model.stem
        self.stages = model.stages
        self.feature_info = model.feature_info

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
