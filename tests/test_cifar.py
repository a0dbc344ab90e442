import pytest
import torch
from torch import nn

from sknet.models import create_model, get_entry
from sknet.profiling import Printed, profile


def _params(name: str, **kwargs) -> int:
    return profile(name, **kwargs).params


@pytest.mark.parametrize(
    ("name", "params_10", "params_100"),
    [
        ("resnext29_16x32d", 25_136_970, 25_229_220),
        ("resnext29_8x64d", 34_426_698, 34_518_948),
        ("resnext29_16x64d", 68_155_210, 68_247_460),
        ("senet29", 34_948_506, 35_040_756),
        ("sknet29", 28_256_394, 28_348_644),
    ],
)
def test_table5_counts_for_both_heads(name, params_10, params_100):
    assert _params(name) == params_10
    assert _params(name, num_classes=100) == params_100 == params_10 + 1024 * 90 + 90


def test_the_documented_cifar_arithmetic():
    with torch.device("meta"):
        sknet29 = create_model("sknet29")
        resnext = {name: create_model(f"resnext29_{name}") for name in ("8x64d", "16x64d")}
    # ResNeXt's 34.4M / 68.1M are the counts without BN's affine parameters.
    for model, printed in ((resnext["8x64d"], "34.4M"), (resnext["16x64d"], "68.1M")):
        bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                 for p in m.parameters())
        assert Printed(printed).matches(sum(p.numel() for p in model.parameters()) - bn)
    # SK on 16x32d adds second-branch BN + attention only: 3,119,424.
    assert _params("sknet29") - _params("resnext29_16x32d") == 3_119_424
    select = sum(unit.attention.select.weight.numel() for unit in sknet29.sk_units().values())
    assert _params("sknet29") - select // 2 == 27_224_202  # one select matrix instead of two
    assert _params("sknet29", reduction=32) == 26_781_258
    assert Printed("27.7M").matches(_params("sknet29", reduction=20))
    # SE (r=16): 521,808 on either backbone; only 8x64d reaches 35.0M.
    assert _params("senet29") - _params("resnext29_8x64d") == 521_808
    assert _params("resnext29_16x32d", se_reduction=16) == 25_658_778


def test_cifar_layout_and_names():
    model = create_model("sknet29")
    assert model.num_classes == 10 and model.num_features == 1024
    units = model.sk_units()
    assert list(units) == [f"SK_{s}_{b}" for s in (2, 3, 4) for b in (1, 2, 3)]
    assert [u.branches[0].conv.out_channels for u in units.values()][::3] == [512, 1024, 2048]
    assert units["SK_2_1"].attention.fuse.conv.out_channels == 32
    extractor = create_model("resnext29_16x32d", features_only=True).eval()
    shapes = [f.shape[1:] for f in extractor(torch.randn(1, 3, 32, 32))]
    assert shapes == [(256, 32, 32), (512, 16, 16), (1024, 8, 8)]


def test_paper_error_follows_the_head():
    paper = get_entry("sknet29").paper
    assert paper.input_size == 32
    assert (paper.top1_err(10), paper.top1_err(100), paper.top1_err(1000)) == (3.47, 17.33, None)
    imagenet = get_entry("sknet50").paper
    assert (imagenet.top1_err(1000), imagenet.top1_err(1000, crop=320)) == (20.79, 19.32)
    assert imagenet.top1_err(10) is None
    assert get_entry("senet29").paper.top1_err(100) == 17.78
