"""One test over every registered model, and the registry's interface."""

import pytest
import torch

import sknet
from sknet.models import create_model, get_entry, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name):
    model = create_model(name, num_classes=7)
    size = get_entry(name).paper.input_size if get_entry(name).paper else 224
    size = min(size, 64)
    x = torch.randn(2, get_entry(name).config.get("in_chans", 3), size, size)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    features = model.forward_features(x)
    assert features.shape[:2] == (2, model.num_features)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)


def test_reset_classifier_and_interface():
    model = create_model("sknet26", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    model.reset_classifier(3)
    assert model(x).shape == (1, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features) and model.num_classes == 0


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


def test_table_rows_are_one_call():
    model = create_model("sknet50", branches=[(3, 1, 32), (3, 2, 32), (3, 3, 32)], attention=False)
    unit = model.sk_units()["SK_3_1"]
    assert unit.attention is None and unit.receptive_fields == [3, 5, 7]
    assert model.config == {
        "name": "sknet50",
        "num_classes": 1000,
        "kwargs": {"branches": [(3, 1, 32), (3, 2, 32), (3, 3, 32)], "attention": False},
    }


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
