"""Backbones in torchvision's detection API.

torchvision's ``BackboneWithFPN`` (and the segmentation models) take a backbone through
``IntermediateLayerGetter``: it keeps the backbone's *direct children* up to the last one named in
``return_layers``, runs them in order and returns the outputs of those named. A
:class:`~sknet.models.base.FeatureExtractor` keeps our parameter names (``stem.*``,
``stages.N.*``), so its stages sit inside one ``nn.ModuleList``; :class:`FeatureSequence` holds
the same modules as direct children, named as ``feature_info`` names them with ``_`` for ``.``.
The rest of the detection recipe is elsewhere: frozen BatchNorm is
:func:`~sknet.layers.freeze_norm` (``create_model(..., frozen_norm=True)``), and
``torchvision.models.feature_extraction.create_feature_extractor`` needs nothing (it traces the
plain forward with ``torch.fx``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sknet.models.base import FeatureExtractor, FeatureInfo, run_layers


def child_name(layer: str) -> str:
    """The direct-child name of a layer of a :class:`FeatureExtractor`: ``stages.1`` ->
    ``stages_1`` (a module name cannot hold a dot)."""
    return layer.replace(".", "_")


class FeatureSequence(nn.Module):
    """A features-only network whose direct children, run in order, compute its feature maps:
    what torchvision's ``IntermediateLayerGetter`` and ``BackboneWithFPN`` need.

    The children are the layers of ``features`` (:meth:`FeatureExtractor.layers`), the same
    modules, not copies: ``stem`` (or ``stem_0``, ``stem_1``, ... when the stem level is inside
    the stem, as the ImageNet stem's convolution before its max-pool), then ``stages_0``, ...
    :attr:`return_layers` names the levels of ``features.out_indices`` for ``BackboneWithFPN``
    (outputs ``"0"``, ``"1"``, ..., the names torchvision's ``FasterRCNN`` pools from), and the
    forward returns the same list as ``features``. Its state dict names are the children's
    (``stages_0.*``); :meth:`load_state_dict` also takes the backbone's (``stem.*``,
    ``stages.N.*``), e.g. those of the ``FeatureExtractor``.

    Args:
        features: a ``features_only`` model (``create_model(..., features_only=True)``).

    Attributes:
        sources: each child's name in the backbone, e.g. ``{"stages_0": "stages.0"}``.
        out_indices: the feature levels, as in ``features``.
        feature_info: as in ``features``, each level named by its child.
    """

    def __init__(self, features: FeatureExtractor) -> None:
        super().__init__()
        self.sources: dict[str, str] = {}
        for layer, module in features.layers():
            self.add_module(child_name(layer), module)
            self.sources[child_name(layer)] = layer
        self.out_indices = features.out_indices
        self.feature_info = FeatureInfo(
            [{**level, "name": child_name(str(level["name"]))} for level in features.feature_info]
        )

    @property
    def return_layers(self) -> dict[str, str]:
        """``BackboneWithFPN``'s ``return_layers``: each level's child -> its position,
        shallow to deep (``{"stages_0": "0", "stages_1": "1", ...}``)."""
        levels = self.feature_info.module_name()
        return {name: str(position) for position, name in enumerate(levels)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_layers(self.named_children(), self.feature_info.module_name(), x)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Rename the backbone's keys (``stages.0.*``) to the children's (``stages_0.*``) first."""
        for child, source in self.sources.items():
            theirs = f"{prefix}{source}."
            if child != source:
                for key in [key for key in state_dict if key.startswith(theirs)]:
                    state_dict[f"{prefix}{child}.{key[len(theirs):]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)
