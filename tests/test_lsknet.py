"""LSKNet: the official network's parameter count, its published checkpoint layouts loaded
through the public API with equal outputs, clear errors, and the model interface."""

import argparse
import logging

import pytest
import torch
from lsknet_reference import S_CONFIG, T_CONFIG, OfficialLSKNet, randomized
from torch import nn

import sknet
from sknet.cli import main
from sknet.errors import UserError
from sknet.layers import LSKUnit
from sknet.preprocessing import LSKNET_IMAGENET

INPUT = (2, 3, 32, 32)
"""Small: stride 32 leaves one position, every layer still runs."""


def relative_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


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


@pytest.fixture(scope="module")
def official_t() -> nn.Module:
    return randomized(OfficialLSKNet(**T_CONFIG, num_classes=5), seed=1)


def save_checkpoint(path, state, **extra) -> str:
    torch.save({"state_dict": state, **extra}, path)
    return str(path)


def test_imagenet_checkpoint_gives_the_official_logits(official_t, tmp_path):
    path = save_checkpoint(
        tmp_path / "lsk_t_backbone.pth.tar", official_t.state_dict(), epoch=300, arch="lsknet_t",
        args=argparse.Namespace(model="lsk_t", lr=1e-3, sched="cosine"),  # as timm's train.py
    )
    model = sknet.create_model("lsknet_t", pretrained=path).eval()
    record = model.record
    assert (record.name, record.num_classes, record.kwargs) == ("lsknet_t", 5, {})
    assert record.preprocessing == LSKNET_IMAGENET
    x = torch.randn(INPUT)
    with torch.no_grad():
        got, expected = model(x), official_t(x)
    assert relative_difference(got, expected) < 1e-5

    # The check has teeth: the two branches' 1x1 reductions swapped change the logits.
    swapped = dict(official_t.state_dict())
    for key in official_t.state_dict():
        if ".spatial_gating_unit.conv1." in key:
            other = key.replace(".conv1.", ".conv2.")
            swapped[key], swapped[other] = swapped[other], swapped[key]
    wrong = sknet.load_pretrained(save_checkpoint(tmp_path / "swapped.pth", swapped)).eval()
    with torch.no_grad():
        assert relative_difference(wrong(x), expected) > 1e-2

    # Saved in our format, it loads back to the same network, and its card says where from.
    model.save_pretrained(tmp_path / "ours")
    again = sknet.load_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert torch.equal(again(x), got)
    assert again.record == model.record
    card = (tmp_path / "ours" / "README.md").read_text(encoding="utf-8")
    assert "LSKNet's official ImageNet backbone checkpoint" in card


def test_sknet_eval_reads_the_official_checkpoint(tmp_path, capsys):
    official = randomized(OfficialLSKNet(**T_CONFIG), seed=3)
    path = save_checkpoint(tmp_path / "lsk_t_backbone.pth.tar", official.state_dict())
    assert main(["eval", "--checkpoint", path, "--data", "synthetic:4", "--sizes", "32"]) == 0
    assert "lsknet_t on synthetic:4 at 32x32: top-1 err" in capsys.readouterr().out


def test_checkpoint_without_head_gives_the_backbone(official_t, tmp_path, caplog):
    state = {k: v for k, v in official_t.state_dict().items() if not k.startswith("head.")}
    path = save_checkpoint(tmp_path / "headless.pth.tar", state)
    x = torch.randn(INPUT)
    with torch.no_grad():
        expected = official_t.stage_outputs(x)
    with caplog.at_level(logging.INFO, logger="sknet"):
        extractor = sknet.create_model("lsknet_t", pretrained=path, features_only=True).eval()
    assert not caplog.records  # nothing re-initialised: only the backbone was asked for
    with torch.no_grad():
        got = extractor(x)
    assert extractor.feature_info.reduction() == [4, 8, 16, 32]
    for feature, reference in zip(got, expected, strict=True):
        assert relative_difference(feature, reference) < 1e-5

    with caplog.at_level(logging.INFO, logger="sknet"):
        classifier = sknet.load_pretrained(path)
    assert classifier.num_classes == 1000
    assert [r.getMessage() for r in caplog.records if "re-initialised" in r.getMessage()]


def test_mmrotate_detector_checkpoint_gives_the_backbone_maps(tmp_path, caplog):
    official = randomized(OfficialLSKNet(**S_CONFIG, num_classes=None), seed=2)
    state = {f"backbone.{key}": value for key, value in official.state_dict().items()}
    ignored = {
        "neck.lateral_convs.0.conv.weight": torch.randn(256, 64, 1, 1),
        "rpn_head.rpn_conv.weight": torch.randn(256, 256, 3, 3),
        "roi_head.bbox_head.fc_cls.weight": torch.randn(16, 1024),
    }
    meta = {"epoch": 12, "CLASSES": ("plane", "ship"), "mmcv_version": "1.6.0"}
    path = save_checkpoint(tmp_path / "lsk_s_fpn_1x_dota_le90.pth", {**state, **ignored}, meta=meta)
    with caplog.at_level(logging.INFO, logger="sknet"):
        extractor = sknet.create_model("lsknet_s", pretrained=path, features_only=True).eval()
    (line,) = [record.getMessage() for record in caplog.records]
    assert f"ignored {len(ignored)} tensors of its neck and heads" in line
    x = torch.randn(INPUT)
    with torch.no_grad():
        got, expected = extractor(x), official.stage_outputs(x)
    assert [f.shape[1] for f in got] == [64, 128, 320, 512]
    for feature, reference in zip(got, expected, strict=True):
        assert relative_difference(feature, reference) < 1e-5


def test_foreign_keys_fail_in_one_line_naming_the_first(official_t, tmp_path):
    state = {**official_t.state_dict(), "decoder.weight": torch.zeros(3)}
    path = save_checkpoint(tmp_path / "mixed.pth", state)
    with pytest.raises(UserError, match=r"key 'decoder\.weight' is neither") as error:
        sknet.load_pretrained(path)
    assert "\n" not in str(error.value)
    resnet = save_checkpoint(tmp_path / "resnet.pth", {"conv1.weight": torch.zeros(8, 3, 7, 7)})
    with pytest.raises(UserError, match=r"not an LSKNet checkpoint: key 'conv1\.weight'"):
        sknet.create_model("lsknet_t", pretrained=resnet)
    head = save_checkpoint(tmp_path / "head.pth", {"head.weight": torch.zeros(5, 256)})
    with pytest.raises(UserError, match="an incomplete LSKNet checkpoint"):
        sknet.create_model("lsknet_t", pretrained=head)
    with pytest.raises(UserError, match="of model 'lsknet_t', not 'lsknet_s'"):
        sknet.create_model("lsknet_s", pretrained=save_checkpoint(
            tmp_path / "t.pth", official_t.state_dict()
        ))


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


def test_other_widths_load_as_overrides_of_lsknet_s(tmp_path):
    config = {"embed_dims": (8, 16, 24, 32), "depths": (1, 2, 1, 1), "mlp_ratios": (2, 2, 4, 4)}
    official = randomized(OfficialLSKNet(**config, num_classes=3), seed=4)
    model = sknet.load_pretrained(save_checkpoint(tmp_path / "tiny.pth", official.state_dict()))
    assert (model.record.name, dict(model.record.kwargs)) == ("lsknet_s", config)
    x = torch.randn(INPUT)
    with torch.no_grad():
        assert relative_difference(model.eval()(x), official(x)) < 1e-5
