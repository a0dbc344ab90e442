"""One test over every registered model, and the registry's interface."""

import pytest
import torch

import sknet
from sknet.layers import SplitAttentionConv, fast
from sknet.models import create_model, get_entry, list_models
from sknet.preprocessing import PAPER_IMAGENET


def small_input(name: str, batch: int = 2) -> torch.Tensor:
    """A batch at the model's paper input size, at most 64 x 64."""
    entry = get_entry(name)
    size = min(entry.paper.input_size if entry.paper else 224, 64)
    return torch.randn(batch, entry.config.get("in_chans", 3), size, size)


@pytest.mark.parametrize("on", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name, on):
    """Forward and backward with the fast path on and off."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    x = small_input(name)
    fast.set_enabled(on)
    try:
        out = model(x)
    finally:
        fast.set_enabled(True)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    features = model.forward_features(x)
    assert features.shape[:2] == (2, model.num_features)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    if on:
        assert_paths_agree(model.double(), x.double())


def assert_paths_agree(model: torch.nn.Module, x: torch.Tensor) -> None:
    """One training forward and one eval forward, fast path on and off, agree to fp32 tolerance.

    In fp64: batch statistics of two samples at the last stages' 1x1 or 2x2 maps are too badly
    conditioned for the two fp32 round-offs to agree to 1e-4 (sk_shufflenet_v2_x0_5: 0.6).
    """
    for train in (True, False):
        model.train(train)
        with torch.set_grad_enabled(train):
            out = model(x)
            with fast.disabled():
                expected = model(x)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_reset_classifier_and_interface():
    model = create_model("sknet26", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    assert model.get_classifier() is model.fc
    model.reset_classifier(3)
    assert model(x).shape == (1, 3) and model.num_classes == 3
    assert model.get_classifier().out_features == 3
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features) and model.num_classes == 0
    assert isinstance(model.get_classifier(), torch.nn.Identity)


def test_features_only_returns_every_stage():
    extractor = create_model("sknet26", features_only=True).eval()
    features = extractor(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == [256, 512, 1024, 2048]
    assert [64 // f.shape[-1] for f in features] == [
        info["reduction"] for info in extractor.feature_info
    ]


def test_sk_units_are_named_like_the_paper():
    model = create_model("sknet50")
    units = model.sk_units()
    assert len(units) == 16
    assert list(units)[:4] == ["SK_2_1", "SK_2_2", "SK_2_3", "SK_3_1"]
    assert {"SK_2_3", "SK_3_4", "SK_4_6", "SK_5_3"} <= set(units)
    assert all(isinstance(unit, sknet.SKConv) for unit in units.values())
    assert create_model("resnext50_32x4d").sk_units() == {}


def test_split_attention_units_are_selection_units_named_alike():
    with torch.device("meta"):
        units = create_model("resnest50d_4s2x40d").sk_units()
    assert len(units) == 16 and list(units)[:4] == ["SK_2_1", "SK_2_2", "SK_2_3", "SK_3_1"]
    unit = units["SK_4_1"]
    assert isinstance(unit, SplitAttentionConv) and (unit.radix, unit.cardinality) == (4, 2)


def test_resnest_options_build_timms_layout():
    """The deep stem, the pooled shortcut and the avd pool where timm has them."""
    with torch.device("meta"):
        model = create_model("resnest101e")
    assert [m.conv.out_channels for m in model.stem[:3]] == [64, 64, 128]
    first, strided = model.stages[0][0], model.stages[1][0]
    assert first.shortcut_pool is None and first.pool_after is None  # stride 1: no pools
    assert first.downsample.conv.stride == (1, 1)
    assert strided.shortcut_pool.ceil_mode and not strided.shortcut_pool.count_include_pad
    assert strided.downsample.conv.stride == (1, 1) and strided.pool_before is None
    assert strided.pool_after.stride == 2 and strided.pool_after.count_include_pad
    assert strided.conv2.splits.conv.stride == (1, 1)
    with pytest.raises(ValueError, match="radix 2 splits one convolution"):
        create_model("resnest14d", branches=[(3, 1, 1), (3, 2, 1)])
    with pytest.raises(ValueError, match="avd must be None or one of before, after"):
        create_model("resnest14d", avd="first")
    with pytest.raises(ValueError, match="always selects and always splits its input"):
        create_model("resnest14d", attention=False)
    with pytest.raises(ValueError, match="the basic block has none"):
        create_model("resnet18", avd="after")
    with pytest.raises(ValueError, match="deep stem needs even stem_channels"):
        create_model("resnest14d", stem_channels=63)


def test_table_rows_are_one_call():
    model = create_model("sknet50", branches=[(3, 1, 32), (3, 2, 32), (3, 3, 32)], attention=False)
    unit = model.sk_units()["SK_3_1"]
    assert unit.attention is None and unit.receptive_fields == [3, 5, 7]
    record = model.record
    assert (record.name, record.num_classes, record.class_names) == ("sknet50", 1000, None)
    assert record.kwargs == {"branches": [(3, 1, 32), (3, 2, 32), (3, 3, 32)], "attention": False}
    assert record.preprocessing == PAPER_IMAGENET  # the registry entry's default


def test_he_initialisation():
    model = create_model("resnext50_32x4d")
    conv = model.stages[2][0].conv1.conv
    expected_std = (2.0 / (conv.out_channels * conv.kernel_size[0] ** 2)) ** 0.5
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.05
    bn = model.stages[2][0].conv1.bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))


def test_unknown_model_and_keyword_are_clear():
    with pytest.raises(ValueError, match="did you mean sknet50"):
        create_model("sknet5O")
    with pytest.raises(ValueError, match="does not take"):
        create_model("sknet50", kernel=5)


def test_list_models_has_the_paper_zoo():
    names = set(list_models())
    assert {
        "resnext50_32x4d", "resnext101_32x4d", "seresnext50_32x4d", "seresnext101_32x4d",
        "sknet26", "sknet50", "sknet101", "resnext50_36x4d", "resnext56_32x4d",
    } <= names
    assert {"sknet101", "sknet26", "sknet50"} <= set(list_models("sknet"))
