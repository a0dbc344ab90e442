"""ResNeSt (Zhang et al., "ResNeSt: Split-Attention Networks"): timm's variants as
:class:`ResNeXt` configs, under timm's names, with timm's weights and preprocessing.

Every variant has the deep stem, the average-pooled shortcut and the avd pool; ``d`` models a
stem of width 32 (64 outputs), ``e`` models of width 64 (128 outputs). ``KsCxWd`` names radix K,
cardinality C and base width W (plain names: 2s1x64d). Their parameter counts equal timm's
(the tests count both on the meta device).

The published figures are the ResNeSt authors' for their PyTorch weights, which timm's ``in1k``
weights are: top-1 of ResNeSt-50/101/200/269 at their crop sizes from the README of
github.com/zhanghang1989/ResNeSt, and #P, GFLOPs and top-1 of the two "fast" 50-layer variants
from its ablation.md. The gluon-trained resnest14d/26d have none recorded (the authors publish
none for them), nor do the larger models have a #P or GFLOPs (the README prints none).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sknet.layers.split_attention import ATTENTION_MIN_DIM, ATTENTION_REDUCTION
from sknet.models.registry import Derivation, Paper, register_model
from sknet.models.resnext import ResNeXt
from sknet.preprocessing import Preprocessing, timm_preprocessing

SPLIT_ATTENTION: dict[str, Any] = {
    "stem": "deep", "avg_down": True, "radix": 2, "cardinality": 1, "base_width": 64,
    "branches": ((3, 1, 1),), "avd": "after", "reduction": ATTENTION_REDUCTION,
    "min_dim": ATTENTION_MIN_DIM,
}
"""ResNeSt-50's 2s1x64d layout: radix 2, cardinality 1, attention width max(2C/4, 32)."""

README = "the ResNeSt authors' README (github.com/zhanghang1989/ResNeSt), PyTorch weights"
ABLATION = "the ResNeSt authors' ablation.md, PyTorch weights"

FAST_FLOPS = (
    "the authors do not publish how they count; ours counts every convolution and fc "
    "multiply-add and the Select products, {ours} GMACs, {gap} under the {printed} printed "
    "(whose #P we match to the digit), a gap we cannot attribute"
)


def _timm_config(
    size: int = 224, crop_pct: float = 0.875, interpolation: str = "bilinear"
) -> Preprocessing:
    """The preprocessing of timm's pretrained config of a ResNeSt weight (ImageNet mean and std
    throughout)."""
    return timm_preprocessing(
        {"input_size": (3, size, size), "crop_pct": crop_pct, "interpolation": interpolation}
    )


def _fast_variant(
    radix: int, cardinality: int, base_width: int, params: str, flops: str, top1_err: float,
    ours: str,
) -> tuple[dict[str, Any], Preprocessing, Paper]:
    """Config, preprocessing and ablation.md figures of a "fast" ResNeSt-50 (``KsCxWd``, avd before
    the conv); ``ours``: our GMACs, to 3 decimals, beside the printed ``flops``."""
    printed = float(flops.rstrip("G"))
    gap = f"{(printed - float(ours)) / printed:.1%}"
    return (
        {
            "depths": (3, 4, 6, 3), "radix": radix, "cardinality": cardinality,
            "base_width": base_width, "branches": ((3, 1, cardinality),), "avd": "before",
        },
        _timm_config(interpolation="bicubic"),
        Paper(
            f"{ABLATION} (ResNeSt-50-fast {radix}s{cardinality}x{base_width}d)", params, flops,
            top1_224=top1_err,
            derivation=Derivation(
                FAST_FLOPS.format(ours=ours, gap=gap, printed=flops.rstrip("G")),
                flops=f"{float(ours):.2f}G",
            ),
        ),
    )


VARIANTS: tuple[tuple[str, str, dict[str, Any], Preprocessing, Paper | None], ...] = (
    ("resnest14d", "gluon_in1k", {"depths": (1, 1, 1, 1)}, _timm_config(), None),
    ("resnest26d", "gluon_in1k", {"depths": (2, 2, 2, 2)}, _timm_config(), None),
    ("resnest50d", "in1k", {"depths": (3, 4, 6, 3)}, _timm_config(), Paper(
        f"{README} (ResNeSt-50; timm's results for resnest50d.in1k: 80.96% top-1)",
        top1_224=18.97,
    )),
    ("resnest101e", "in1k", {"depths": (3, 4, 23, 3), "stem_channels": 128},
     _timm_config(256), Paper(f"{README} (ResNeSt-101, 256 crop)", top1_224=17.17)),
    ("resnest200e", "in1k", {"depths": (3, 24, 36, 3), "stem_channels": 128},
     _timm_config(320, 0.909, "bicubic"),
     Paper(f"{README} (ResNeSt-200, 320 crop)", top1_224=16.16)),
    ("resnest269e", "in1k", {"depths": (3, 30, 48, 8), "stem_channels": 128},
     _timm_config(416, 0.928, "bicubic"),
     Paper(f"{README} (ResNeSt-269, 416 crop)", top1_224=15.46)),
    ("resnest50d_4s2x40d", "in1k", *_fast_variant(4, 2, 40, "30.4M", "4.41G", 19.14, "4.376")),
    ("resnest50d_1s4x24d", "in1k", *_fast_variant(1, 4, 24, "25.7M", "4.42G", 19.01, "4.402")),
)
"""(name, timm's pretrained tag, config beyond :data:`SPLIT_ATTENTION`, preprocessing, the
published figures or ``None``); the figures are at the preprocessing's input size."""
RESNEST_MODELS = tuple(name for name, *_ in VARIANTS)
"""The registered ResNeSts, each under timm's name for the same network."""

for name, tag, config, preprocessing, published in VARIANTS:
    register_model(
        name, ResNeXt, hub_id=f"timm/{name}.{tag}", preprocessing=preprocessing,
        paper=replace(
            published or Paper(f"timm's {name}.{tag} (the authors publish no figures for it)"),
            input_size=preprocessing.input_size,
        ),
        **{**SPLIT_ATTENTION, **config},
    )
