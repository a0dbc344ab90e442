"""LSKNet's ImageNet backbones (Li et al., ICCV 2023; IJCV 2024): :class:`LSKNet` configs and
what the official repository (github.com/zcablii/LSKNet) prints for them."""

from __future__ import annotations

from sknet.models.lsknet import LSKNet
from sknet.models.registry import Derivation, Paper, register_model
from sknet.preprocessing import LSKNET_IMAGENET

LSKNET_SOURCE = (
    "LSKNet README (ICCV 2023): DOTA-v1.0 mAP {map} with Oriented R-CNN, 1x; #P as quoted from "
    "the paper in the NK-Remote release notes (besthub.dev), the paper's own table unread"
)
"""The official README prints each backbone's DOTA-v1.0 detection mAP and no #P, FLOPs or ImageNet
accuracy. The LSKNet papers' tables could not be read offline: the parameter counts are the ones a
summary of the authors' NK-Remote release quotes from them (whole classifiers, as ours are
counted); their FLOPs, printed for the 1024 x 1024 detection input, and their ImageNet top-1 stay
empty rather than guessed."""

LSKNET_T_PARAMS = (
    "our count equals the official network's to the parameter (tests/test_lsknet.py) and prints "
    "as 4.2M, and the 4.3M quoted is 4,247,190 rounded up (LSKNet-S's 14,353,892 prints as the "
    "quoted 14.4M either way); whether the paper rounds up or counts 3k to 103k more parameters "
    "could not be checked offline"
)

LSKNET_MODELS = ("lsknet_t", "lsknet_s")
"""The registered LSKNets, smallest first (the official checkpoints are matched against them)."""

register_model(
    "lsknet_t", LSKNet, preprocessing=LSKNET_IMAGENET,
    embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2),
    paper=Paper(
        LSKNET_SOURCE.format(map="81.37"), "4.3M", counting="conv",
        derivation=Derivation(LSKNET_T_PARAMS, params="4.2M"),
    ),
)
register_model(
    "lsknet_s", LSKNet, preprocessing=LSKNET_IMAGENET,
    embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2),
    paper=Paper(LSKNET_SOURCE.format(map="81.64"), "14.4M", counting="conv"),
)
