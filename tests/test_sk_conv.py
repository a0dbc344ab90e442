import pytest
import torch
from torch import nn

from sknet import SKAttention, SKConv
from sknet.layers import ConvBnAct, fuse_dim


def randomize_bn(module: nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)


def test_fuse_dim_is_eq4():
    assert fuse_dim(128, 16, 32) == 32
    assert fuse_dim(1024, 16, 32) == 64
    assert fuse_dim(256, 4, 32) == 64


def test_attention_weights_sum_to_one_and_are_seen_by_a_hook():
    layer = SKConv(64, 64, branches=[(3, 1, 32), (3, 2, 32), (3, 3, 32)], min_dim=8)
    seen = []
    layer.attention.register_forward_hook(lambda m, i, o: seen.append(o))
    out = layer(torch.randn(4, 64, 9, 9))
    assert out.shape == (4, 64, 9, 9)
    (weights,) = seen
    assert weights.shape == (4, 3, 64)
    assert torch.allclose(weights.sum(1), torch.ones(4, 64), atol=1e-6)
    assert (weights > 0).all()


def test_select_is_eq6_weighted_sum_of_branches():
    layer = SKConv(32, 32, branches=[(3, 1, 8), (3, 2, 8)], min_dim=4).eval()
    randomize_bn(layer)
    x = torch.randn(2, 32, 8, 8)
    u = [branch(x) for branch in layer.branches]
    s = (u[0] + u[1]).mean((2, 3))
    z = layer.attention.fuse(s[:, :, None, None])
    logits = layer.attention.select(z).view(2, 2, 32)
    a = logits.softmax(1)
    expected = a[:, 0, :, None, None] * u[0] + a[:, 1, :, None, None] * u[1]
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_naive_mode_sums_branches_without_attention_parameters():
    layer = SKConv(32, 32, branches=[(3, 1, 8), (3, 2, 8)], attention=False).eval()
    assert layer.attention is None
    assert not any("attention" in name for name, _ in layer.named_parameters())
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(layer(x), layer.branches[0](x) + layer.branches[1](x))


def test_one_branch_is_a_plain_conv_bn_relu():
    layer = SKConv(16, 32, stride=2, branches=[(3, 1, 4)]).eval()
    plain = ConvBnAct(16, 32, 3, stride=2, groups=4).eval()
    plain.load_state_dict(layer.branches[0].state_dict())
    assert layer.attention is None
    x = torch.randn(2, 16, 10, 10)
    torch.testing.assert_close(layer(x), plain(x))


@pytest.mark.parametrize("train", [False, True])
def test_identical_branches_equal_either_branch(train):
    layer = SKConv(32, 32, branches=[(3, 1, 8), (3, 1, 8)], min_dim=4)
    layer.branches[1].load_state_dict(layer.branches[0].state_dict())
    layer.train(train)
    x = torch.randn(3, 32, 7, 7)
    torch.testing.assert_close(layer(x), layer.branches[0](x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_stride_applies_to_every_branch(stride):
    layer = SKConv(16, 24, stride=stride, branches=[(3, 1, 8), (5, 1, 8), (3, 3, 8)], min_dim=8)
    assert layer(torch.randn(2, 16, 12, 12)).shape == (2, 24, 12 // stride, 12 // stride)
    assert layer.receptive_fields == [3, 5, 7]


def test_depthwise_branches():
    layer = SKConv(24, 24, branches=[(3, 1, 24), (3, 2, 24)], reduction=4, min_dim=32)
    assert layer.attention.fuse.conv.out_channels == 32
    assert layer(torch.randn(2, 24, 6, 6)).shape == (2, 24, 6, 6)


def test_parameter_count_of_sk_2_32_16():
    layer = SKConv(128, 128)
    branch = 128 * 128 // 32 * 9 + 2 * 128
    attention = 128 * 32 + 2 * 32 + 32 * 2 * 128
    assert sum(p.numel() for p in layer.parameters()) == 2 * branch + attention


def test_batch_of_one_in_training_gives_a_clear_error_and_works_in_eval():
    layer = SKConv(32, 32, branches=[(3, 1, 8), (3, 2, 8)])
    with pytest.raises(ValueError, match="batch of at least 2"):
        layer(torch.randn(1, 32, 5, 5))
    layer.eval()
    assert layer(torch.randn(1, 32, 5, 5)).shape == (1, 32, 5, 5)


@pytest.mark.parametrize(
    "branches", [[], [(3, 1)], [(3, 0, 1)], [(3.0, 1, 1)]], ids=["none", "short", "zero", "float"]
)
def test_bad_branch_specs_are_rejected(branches):
    with pytest.raises(ValueError, match="branch"):
        SKConv(8, 8, branches=branches)


def test_attention_needs_two_branches():
    with pytest.raises(ValueError, match="M >= 2"):
        SKAttention(8, 1)
