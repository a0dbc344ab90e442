"""ResNeSt (Zhang et al., "ResNeSt: Split-Attention Networks"): timm's variants as
:class:`ResNeXt` configs, under timm's names, with timm's weights and preprocessing.

Every variant has the deep stem, the average-pooled shortcut and the avd pool; ``d`` models a
stem of width 32 (64 outputs), ``e`` models of width 64 (128 outputs). ``KsCxWd`` names radix K,
cardinality C and base width W (plain names: 2s1x64d). Their parameter counts equal timm's
(the tests count both on the meta device).

The ResNeSt paper's printed #P, GFLOPs and top-1 are not recorded: no copy of the paper was at
hand offline, and a figure that cannot be checked is not written down. The one top-1 recorded is
timm's, for resnest50d (80.96%, from timm's published results).
"""

from __future__ import annotations

from typing import Any

from sknet.models.registry import Paper, register_model
from sknet.models.resnext import ResNeXt
from sknet.models.timm_weights import timm_preprocessing
from sknet.preprocessing import Preprocessing

SPLIT_ATTENTION: dict[str, Any] = {
    "stem": "deep", "avg_down": True, "radix": 2, "cardinality": 1, "base_width": 64,
    "branches": ((3, 1, 1),), "avd": "after", "reduction": 4, "min_dim": 32,
}
"""ResNeSt-50's 2s1x64d layout: radix 2, cardinality 1, attention width max(2C/4, 32)."""

NOT_OFFLINE = "not available offline"
"""Why a variant's :class:`Paper` records no figures from the paper."""


def _timm_config(
    size: int = 224, crop_pct: float = 0.875, interpolation: str = "bilinear"
) -> Preprocessing:
    """The preprocessing of timm's pretrained config of a ResNeSt weight (ImageNet mean and std
    throughout)."""
    return timm_preprocessing(
        {"input_size": (3, size, size), "crop_pct": crop_pct, "interpolation": interpolation}
    )


VARIANTS: tuple[tuple[str, str, dict[str, Any], Preprocessing, float | None], ...] = (
    ("resnest14d", "gluon_in1k", {"depths": (1, 1, 1, 1)}, _timm_config(), None),
    ("resnest26d", "gluon_in1k", {"depths": (2, 2, 2, 2)}, _timm_config(), None),
    ("resnest50d", "in1k", {"depths": (3, 4, 6, 3)}, _timm_config(), 19.04),
    ("resnest101e", "in1k", {"depths": (3, 4, 23, 3), "stem_channels": 128},
     _timm_config(256), None),
    ("resnest200e", "in1k", {"depths": (3, 24, 36, 3), "stem_channels": 128},
     _timm_config(320, 0.909, "bicubic"), None),
    ("resnest269e", "in1k", {"depths": (3, 30, 48, 8), "stem_channels": 128},
     _timm_config(416, 0.928, "bicubic"), None),
    ("resnest50d_4s2x40d", "in1k", {
        "depths": (3, 4, 6, 3), "radix": 4, "cardinality": 2, "base_width": 40,
        "branches": ((3, 1, 2),), "avd": "before",
    }, _timm_config(interpolation="bicubic"), None),
    ("resnest50d_1s4x24d", "in1k", {
        "depths": (3, 4, 6, 3), "radix": 1, "cardinality": 4, "base_width": 24,
        "branches": ((3, 1, 4),), "avd": "before",
    }, _timm_config(interpolation="bicubic"), None),
)
"""(name, timm's pretrained tag, config beyond :data:`SPLIT_ATTENTION`, preprocessing, top-1
error % from timm's results or ``None``)."""

for name, tag, config, preprocessing, error in VARIANTS:
    source = (
        f"timm's results for {name}.{tag} (the ResNeSt paper's #P, GFLOPs and top-1: {NOT_OFFLINE})"
        if error is not None
        else f"timm's {name}.{tag} (the ResNeSt paper's #P, GFLOPs and top-1, timm's top-1: "
        f"{NOT_OFFLINE})"
    )
    register_model(
        name, ResNeXt, hub_id=f"timm/{name}.{tag}", preprocessing=preprocessing,
        paper=Paper(source, top1_224=error, input_size=preprocessing.input_size),
        **{**SPLIT_ATTENTION, **config},
    )
