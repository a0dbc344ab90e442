"""A small SK network for the built-in digits data (the README's main job).

Not a paper model: a CIFAR-style :class:`ResNeXt` (one 3x3 stem conv, no max-pool) with three
stages of SK units, so that the attention analysis of Section 4.4 (Figures 3-4: SK units in low,
middle and high stages) can be run on a network trained in minutes on a laptop CPU. Its units are
SK_2_1, SK_3_1 and SK_4_1; each is SK[2, 8, 4] with L = 16 (Eq. 4), because the paper's L = 32 would
exceed the 32-128 channels of these stages.
"""

from __future__ import annotations

from sknet.models.registry import register_model
from sknet.models.resnext import ResNeXt

register_model(
    "sknet_digits", ResNeXt, default_num_classes=10,
    depths=(1, 1, 1), cardinality=8, base_width=4, base_out=64, stem="cifar", stem_channels=32,
    branches=((3, 1, 8), (3, 2, 8)), reduction=4, min_dim=16, in_chans=1,
)
