"""``create_model(name, features_only=True, out_indices=...)``: backbones for dense tasks."""

import pytest
import torch

import sknet
from sknet.models import FeatureExtractor, get_entry, list_models

IMAGENET_MODELS = [name for name in list_models() if get_entry(name).default_num_classes == 1000]
RESNEXT_WIDTHS = [64, 256, 512, 1024, 2048]
"""Table 1: conv1 (64) and the outputs of conv2-conv5 of every ResNeXt-50/101-style model."""
BASIC_WIDTHS = [64, 64, 128, 256, 512]
"""ResNet-18/34 (He et al., Table 1): conv1 and the outputs of conv2-conv5, basic blocks."""
RESNEST_E_WIDTHS = [128, 256, 512, 1024, 2048]
"""ResNeSt-101/200/269 (timm's "e" models): a deep stem of width 64 (64, 64, 128 channels), then
the outputs of conv2-conv5 as in Table 1."""
SHUFFLENET_WIDTHS = {"x0_5": [24, 48, 96, 192], "x1_0": [24, 116, 232, 464]}
"""ShuffleNetV2's Table 5: conv1 (24) and the outputs of stages 2-4."""
LSKNET_WIDTHS = {"lsknet_t": [32, 64, 160, 256], "lsknet_s": [64, 128, 320, 512]}
"""LSKNet's four stage outputs (no stem level: the patch embeddings belong to the stages)."""


def expected_levels(name):
    """(channels, reductions, whether level 0 is a stem) of feature levels 0.. from the papers,
    not from our code."""
    if "shufflenet" in name:
        return SHUFFLENET_WIDTHS[name[-4:]], [2, 8, 16, 32], True
    if name in LSKNET_WIDTHS:
        return LSKNET_WIDTHS[name], [4, 8, 16, 32], False
    if name in ("resnet18", "resnet34", "skresnet18", "skresnet34"):
        return BASIC_WIDTHS, [2, 4, 8, 16, 32], True
    if name in ("resnest101e", "resnest200e", "resnest269e"):
        return RESNEST_E_WIDTHS, [2, 4, 8, 16, 32], True
    return RESNEXT_WIDTHS, [2, 4, 8, 16, 32], True


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_every_imagenet_model_gives_its_feature_pyramid(name):
    channels, reductions, has_stem = expected_levels(name)
    everything = list(range(len(channels)))
    with torch.device("meta"):  # shapes only: no weights initialised, no arithmetic
        extractor = sknet.create_model(name, features_only=True, out_indices=everything)
        features = extractor(torch.empty(2, 3, 64, 64))
        stages = sknet.create_model(name, features_only=True)
        deepest_two = sknet.create_model(name, features_only=True, out_indices=(-2, -1))
    assert [tuple(f.shape) for f in features] == [
        (2, c, 64 // r, 64 // r) for c, r in zip(channels, reductions, strict=True)
    ]
    info = extractor.feature_info
    assert info.channels() == channels and info.reduction() == reductions
    # default: every stage, no stem
    assert stages.feature_info.reduction() == (reductions[1:] if has_stem else reductions)
    assert deepest_two.feature_info.channels() == channels[-2:]
    assert deepest_two.out_indices == (len(channels) - 2, len(channels) - 1)


def test_levels_are_the_stem_conv_and_the_stage_outputs_of_the_full_model():
    model = sknet.create_model("sknet26", num_classes=10).eval()
    extractor = FeatureExtractor(model, out_indices=(0, 1, 2, 3, 4))  # shares model's modules
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = [model.stem[0](x), model.stem(x)]  # conv1 before the max-pool, then conv2 in
        for stage in model.stages:
            expected.append(stage(expected[-1]))
        got = extractor(x)
        deepest = model.forward_features(x)
    assert extractor.feature_info.module_name()[:2] == ["stem.0", "stages.0"]
    for feature, reference in zip(got, expected[:1] + expected[2:], strict=True):
        torch.testing.assert_close(feature, reference)
    torch.testing.assert_close(got[-1], deepest)


def test_stages_after_the_last_picked_are_left_out():
    extractor = sknet.create_model("sknet26", features_only=True, out_indices=(0, 2)).eval()
    assert len(extractor.stages) == 2
    kept = ("stem.", "stages.0.", "stages.1.")
    assert all(key.startswith(kept) for key in extractor.state_dict())
    assert [f.shape[1] for f in extractor(torch.randn(1, 3, 32, 32))] == [64, 512]


def test_cifar_models_start_at_stride_1():
    extractor = sknet.create_model("sknet29", features_only=True, out_indices=(0, 1, 2, 3))
    assert extractor.feature_info.reduction() == [1, 1, 2, 4]
    assert extractor.feature_info.module_name() == ["stem", "stages.0", "stages.1", "stages.2"]


@pytest.mark.parametrize(
    ("out_indices", "message"),
    [
        ((5,), r"out_indices \(5,\) out of range; its feature levels are 0 \(stride 2, 64 ch\)"),
        ((-6,), "out of range"),
        ((), "out of range"),
        ((2, 1), "strictly increasing"),
        ((1, -4), "strictly increasing"),
        (3, "must be a sequence of ints"),
        ((1.0,), "must be a sequence of ints"),
    ],
)
def test_bad_out_indices_fail_clearly(out_indices, message):
    with pytest.raises(ValueError, match=message):
        sknet.create_model("sknet26", features_only=True, out_indices=out_indices)


def test_out_indices_needs_features_only():
    with pytest.raises(ValueError, match="out_indices needs features_only=True"):
        sknet.create_model("sknet26", out_indices=(1, 2))


def test_feature_levels_match_timm_for_the_same_indices():
    timm = pytest.importorskip("timm")
    for ours, theirs in (("sknet50", "skresnext50_32x4d"), ("resnext50_32x4d", "resnext50_32x4d"),
                         ("seresnext50_32x4d", "seresnext50_32x4d")):
        for out_indices in ((0, 1, 2, 3, 4), (1, 2, 3, 4), (2, 4)):
            with torch.device("meta"):
                mine = sknet.create_model(ours, features_only=True, out_indices=out_indices)
                reference = timm.create_model(theirs, features_only=True, out_indices=out_indices)
            assert mine.feature_info.channels() == reference.feature_info.channels()
            assert mine.feature_info.reduction() == reference.feature_info.reduction()
