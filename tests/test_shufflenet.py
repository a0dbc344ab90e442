import pytest
import torch
import torchvision
from torch import nn

from sknet import SKConv
from sknet.layers import SqueezeExcite
from sknet.models import ShuffleNetV2, create_model, get_entry, list_models
from sknet.models.shufflenet import channel_shuffle
from sknet.profiling import Printed, profile


def _layers(module: nn.Module) -> list[nn.Module]:
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    return [m for m in module.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("width", ["x0_5", "x1_0"])
def test_plain_model_is_torchvisions_network(width):
    """Same weights in the same order give the same logits: layout, concat order and shuffle."""
    theirs = getattr(torchvision.models, f"shufflenet_v2_{width}")().eval()
    for bn in theirs.modules():
        if isinstance(bn, nn.BatchNorm2d):  # non-trivial statistics
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    ours = create_model(f"shufflenet_v2_{width}").eval()
    pairs = [(ours.stem, theirs.conv1), (ours.conv5, theirs.conv5), (ours.fc, theirs.fc)]
    for our_stage, their_stage in zip(
        ours.stages, (theirs.stage2, theirs.stage3, theirs.stage4), strict=True
    ):
        for our_unit, their_unit in zip(our_stage, their_stage, strict=True):
            pairs.append((our_unit.branch_main, their_unit.branch2))
            if our_unit.branch_proj is not None:
                pairs.append((our_unit.branch_proj, their_unit.branch1))
    for our_part, their_part in pairs:
        for mine, source in zip(_layers(our_part), _layers(their_part), strict=True):
            mine.load_state_dict(source.state_dict())
    x = torch.randn(2, 3, 64, 64)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in theirs.parameters()
    )
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "params", "macs", "paper_params_match"),
    [
        ("shufflenet_v2_x0_5", 1_366_792, 40.48e6, False),
        ("se_shufflenet_v2_x0_5", 1_396_672, 40.51e6, False),
        ("sk_shufflenet_v2_x0_5", 1_478_432, 42.40e6, True),
        ("shufflenet_v2_x1_0", 2_278_604, 144.91e6, False),
        ("se_shufflenet_v2_x1_0", 2_449_180, 145.08e6, False),
        ("sk_shufflenet_v2_x1_0", 2_633_780, 149.39e6, True),
    ],
)
def test_table4_counts(name, params, macs, paper_params_match):
    counts = profile(name)
    assert counts.params == params
    assert abs(counts.macs - macs) < 5e3
    paper = get_entry(name).paper
    assert Printed(paper.params).matches(counts.params) == paper_params_match


def test_sk_increment_is_the_documented_arithmetic():
    """SK on a C-channel depthwise 3x3: 9C + 2C (second branch) + dC + 2d + 2dC (attention)."""
    model = create_model("sk_shufflenet_v2_x0_5")
    extra = 0
    for unit in model.sk_units().values():
        channels, dim = unit.branches[0].conv.out_channels, unit.attention.fuse.conv.out_channels
        assert dim == max(channels // 4, 32)
        extra += 11 * channels + 3 * dim * channels + 2 * dim
    assert extra == 1_478_432 - 1_366_792


def test_sk_unit_names_and_branches():
    units = create_model("sk_shufflenet_v2_x1_0").sk_units()
    assert len(units) == 19
    assert list(units)[:4] == ["SK_2_1", "SK_2_1b", "SK_2_2", "SK_2_3"]
    assert {"SK_3_1b", "SK_3_8", "SK_4_1b", "SK_4_4"} <= set(units)
    main, proj = units["SK_2_1"], units["SK_2_1b"]
    assert main.branches[0].conv.in_channels == 58 and proj.branches[0].conv.in_channels == 24
    for unit in units.values():
        assert unit.receptive_fields == [3, 5]
        assert all(b.conv.groups == b.conv.in_channels for b in unit.branches)
    assert create_model("shufflenet_v2_x1_0").sk_units() == {}


def test_se_gates_each_transformation_branch():
    model = create_model("se_shufflenet_v2_x0_5")
    gates = [unit.branch_main[-1] for stage in model.stages for unit in stage]
    assert len(gates) == 16 and all(isinstance(g, SqueezeExcite) for g in gates)
    assert [g.fc1.in_channels for g in gates[::4]] == [24, 48, 48, 96]
    assert gates[0].fc1.out_channels == 24 // 4


def test_lightweight_flag_marks_exactly_table4():
    lightweight = {name for name in list_models() if get_entry(name).lightweight}
    prefixes, widths = ("", "se_", "sk_"), ("x0_5", "x1_0")
    assert lightweight == {f"{p}shufflenet_v2_{w}" for p in prefixes for w in widths}


def test_features_and_head():
    model = create_model("sk_shufflenet_v2_x0_5", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    assert model.forward_features(x).shape == (1, 1024, 2, 2)
    extractor = create_model("shufflenet_v2_x0_5", features_only=True).eval()
    assert [f.shape[1:] for f in extractor(x)] == [(48, 8, 8), (96, 4, 4), (192, 2, 2)]
    assert [i["reduction"] for i in extractor.feature_info] == [8, 16, 32]


def test_naive_sum_and_overrides():
    branches = [(3, 1), (3, 2), (5, 1)]
    model = create_model("sk_shufflenet_v2_x0_5", attention=False, branches=branches)
    unit = model.sk_units()["SK_3_2"]
    assert isinstance(unit, SKConv) and unit.attention is None
    assert unit.receptive_fields == [3, 5, 5]


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("branches", [[(3, 1, 8)], [], [(0, 1)]], ids=["three", "none", "zero"])
def test_bad_branches_are_rejected(branches):
    with pytest.raises(ValueError, match="branch"):
        ShuffleNetV2((48, 96, 192), branches=branches)
