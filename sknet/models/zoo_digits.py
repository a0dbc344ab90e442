"""A small SK network for the built-in digits data (the README's main job) and the scaled digits,
with its ResNeXt and SENet counterparts, the Table 7 variants and the selective-kernel family at
matched cost (split attention, LSK).

Not a paper model: a CIFAR-style :class:`ResNeXt` (one 3x3 stem conv, no max-pool) with three
stages of SK units, so that the attention analysis of Section 4.4 (Figures 3-4: SK units in low,
middle and high stages) can be run on a network trained in minutes on a laptop CPU. Its units are
SK_2_1, SK_3_1 and SK_4_1; each is SK[2, 8, 4] with L = 16 (Eq. 4), because the paper's L = 32 would
exceed the 32-128 channels of these stages.
"""

from __future__ import annotations

from sknet.models.lsknet import LSKNet
from sknet.models.registry import register_model
from sknet.models.resnext import ResNeXt

DIGITS_LAYOUT = {
    "depths": (1, 1, 1), "base_out": 64, "stem": "cifar", "stem_channels": 32, "in_chans": 1,
}
"""One bottleneck in each of three stages (outputs 64, 128, 256), a 3x3 stem of 32 channels."""
DIGITS_ENTRY = {"default_num_classes": 10, "preprocessing": None}
"""Ten classes; no default preprocessing: the data normalises by its training set's statistics."""

register_model(
    "sknet_digits", ResNeXt, **DIGITS_ENTRY, **DIGITS_LAYOUT, cardinality=8,
    base_width=4, branches=((3, 1, 8), (3, 2, 8)), reduction=4, min_dim=16,
)
# Counterparts at matched cost (multiply-adds at 32x32: SKNet 29.41M + 0.11M Select, ResNeXt
# 30.67M, SENet 30.72M): one grouped 3x3 of 10 groups of 4 channels (widths 40/80/160), SE r=4.
register_model(
    "resnext_digits", ResNeXt, **DIGITS_ENTRY, **DIGITS_LAYOUT, cardinality=10,
    base_width=4, branches=((3, 1, 10),),
)
register_model(
    "senet_digits", ResNeXt, **DIGITS_ENTRY, **DIGITS_LAYOUT, cardinality=10,
    base_width=4, branches=((3, 1, 10),), se_reduction=4,
)

K3, K5, K7 = (3, 1, 8), (3, 2, 8), (3, 3, 8)
TABLE7_VARIANTS: dict[str, dict] = {
    "K3": {"branches": (K3,)},
    "K5": {"branches": (K5,)},
    "K3+K5 sum": {"branches": (K3, K5), "attention": False},
    "K3+K5 SK": {"branches": (K3, K5)},
    "K3+K5+K7 SK": {"branches": (K3, K5, K7)},
}
"""Table 7's rows on ``sknet_digits``, as its keyword overrides: one 3x3, one "5x5" (3x3 with
dilation 2), their plain sum, SK over both (the registered model), SK over three (+ dilation 3)."""

# Split attention at matched cost (multiply-adds at 32x32: 29.40M + 0.12M Select = 29.52M, -0.03%
# on sknet_digits; 170,810 parameters): the same widths 32/64/128, ResNeSt's unit of radix 2 and
# cardinality 4 in place of SK's (its splits are 3x3 convs of 4 groups, each reading half of the
# channels, at the cost of SK's two 8-group branches), attention width max(2C/4, L = 16).
register_model(
    "resnest_digits", ResNeXt, **DIGITS_ENTRY, **DIGITS_LAYOUT, cardinality=4,
    base_width=8, branches=((3, 1, 4),), radix=2, reduction=4, min_dim=16,
)

# LSKNet at matched cost (multiply-adds at 32x32: 29.81M, +0.9% on sknet_digits' 29.53M): LSKNet's
# own layout cut to three stages of one block, widths 86/172/344, MLP ratios 8/8/4. Its first patch
# embedding strides by 4, so at 32x32 its LSK units see 8x8, 4x4 and 2x2 maps, and the cost goes
# into width: 2.85M parameters against sknet_digits' 0.18M.
register_model(
    "lsknet_digits", LSKNet, **DIGITS_ENTRY, in_chans=1, embed_dims=(86, 172, 344),
    depths=(1, 1, 1), mlp_ratios=(8, 8, 4),
)
