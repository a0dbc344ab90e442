"""LSKNet's ImageNet backbones (Li et al., ICCV 2023; IJCV 2024): :class:`LSKNet` configs and
what the official repository (github.com/zcablii/LSKNet) prints for them."""

from __future__ import annotations

from sknet.models.lsknet import LSKNet
from sknet.models.registry import Paper, register_model
from sknet.preprocessing import LSKNET_IMAGENET

LSKNET_SOURCE = "LSKNet README (ICCV 2023): DOTA-v1.0 mAP {map} with Oriented R-CNN, 1x"
"""The official README prints each backbone's DOTA-v1.0 detection mAP; none of its parameter
counts, FLOPs or ImageNet accuracies were found in a source we could read, so those stay empty."""

LSKNET_MODELS = ("lsknet_t", "lsknet_s")
"""The registered LSKNets, smallest first (the official checkpoints are matched against them)."""

register_model(
    "lsknet_t", LSKNet, preprocessing=LSKNET_IMAGENET,
    embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2),
    paper=Paper(LSKNET_SOURCE.format(map="81.37"), counting="conv"),
)
register_model(
    "lsknet_s", LSKNet, preprocessing=LSKNET_IMAGENET,
    embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2),
    paper=Paper(LSKNET_SOURCE.format(map="81.64"), counting="conv"),
)
