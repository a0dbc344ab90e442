"""LSKNet: the official network's parameter count and the model interface."""

import pytest
import torch
from lsknet_reference import S_CONFIG, T_CONFIG, OfficialLSKNet
from torch import nn

import sknet
from sknet.layers import LSKUnit

INPUT = (2, 3, 32, 32)
"""Small: stride 32 leaves one position, every layer still runs."""


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "config"), [("lsknet_t", T_CONFIG), ("lsknet_s", S_CONFIG)])
def test_parameter_count_is_the_official_one(name, config):
    with torch.device("meta"):
        ours = sknet.create_model(name)
        official = OfficialLSKNet(**config)
        backbone = OfficialLSKNet(**config, num_classes=None)
        features = sknet.create_model(name, features_only=True)
    assert parameters(ours) == parameters(official)
    assert parameters(features) == parameters(backbone)
    assert {"lsknet_t": 4_247_190, "lsknet_s": 14_353_892}[name] == parameters(ours)


def test_lsk_units_are_named_by_lsknet_stages_and_hooked():
    model = sknet.create_model("lsknet_t", num_classes=3).eval()
    units = model.sk_units()
    assert list(units) == [f"SK_{stage}_{block}" for stage, depth in enumerate((3, 3, 5, 2), 1)
                           for block in range(1, depth + 1)]
    assert all(isinstance(unit, LSKUnit) for unit in units.values())
    seen = []
    units["SK_2_1"].attention.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(torch.randn(INPUT))
    assert seen[0].shape == (2, 2, 4, 4)  # stage 2: stride 8 of 32


def test_drop_path_drops_whole_samples_in_training_only():
    model = sknet.create_model("lsknet_t", num_classes=3, drop_path_rate=0.5)
    rates = [block.drop_path.rate for stage in model.stages for block in stage.blocks]
    assert rates[0] == 0.0 and rates[-1] == 0.5 and rates == sorted(rates)
    drop = model.stages[-1].blocks[-1].drop_path
    x = torch.ones(64, 4, 2, 2)
    kept = drop(x).flatten(1)
    assert set(kept[:, 0].tolist()) <= {0.0, 2.0} and (kept == kept[:, :1]).all()
    assert torch.equal(drop.eval()(x), x)
