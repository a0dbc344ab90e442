"""The LSK unit against the LSKNet formulas written out, its hookable selection weights, and its
place among the selection units."""

import pytest
import torch
import torch.nn.functional as F

from sknet.layers import SELECTION_UNITS, LSKUnit, fast


def official_formulas(unit: LSKUnit, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LSKNet's LSKblock written out with functional convolutions (the unit's weights, the
    official padding): 5x5 depthwise (padding 2), 7x7 depthwise dilation 3 (padding 9) on its
    output, one 1x1 to C/2 each, the concatenation's channel mean and max, a 7x7 conv (2 -> 2,
    padding 3), sigmoid, the weighted sum, 1x1 back to C, times the input.

    Returns the output and the selection weights.
    """
    channels = x.shape[1]
    first, second = unit.depthwise
    u1 = F.conv2d(x, first.weight, first.bias, padding=2, groups=channels)
    u2 = F.conv2d(u1, second.weight, second.bias, padding=9, dilation=3, groups=channels)
    r1 = F.conv2d(u1, unit.reduce[0].weight, unit.reduce[0].bias)
    r2 = F.conv2d(u2, unit.reduce[1].weight, unit.reduce[1].bias)
    both = torch.cat([r1, r2], dim=1)
    statistics = torch.cat([both.mean(1, keepdim=True), both.max(1, keepdim=True)[0]], dim=1)
    squeeze = unit.attention.squeeze
    weights = F.conv2d(statistics, squeeze.weight, squeeze.bias, padding=3).sigmoid()
    selected = r1 * weights[:, 0:1] + r2 * weights[:, 1:2]
    gate = F.conv2d(selected, unit.expand.weight, unit.expand.bias)
    return x * gate, weights


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-on", "fast-off"])
def test_forward_and_gradients_match_the_official_formulas(fast_path):
    torch.manual_seed(0)
    unit = LSKUnit(12).double()
    for parameter in unit.parameters():  # biases non-zero, weights of unit scale
        torch.nn.init.uniform_(parameter, -0.5, 0.5)
    x = torch.randn(2, 12, 11, 13, dtype=torch.float64, requires_grad=True)
    seen = []
    unit.attention.register_forward_hook(lambda module, inputs, output: seen.append(output))
    fast.set_enabled(fast_path)
    try:
        out = unit(x)
    finally:
        fast.set_enabled(True)
    expected, weights = official_formulas(unit, x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(seen[0], weights, rtol=1e-12, atol=1e-12)

    probe = torch.randn_like(out)
    parameters = [x, *unit.parameters()]
    ours = torch.autograd.grad((out * probe).sum(), parameters)
    reference = torch.autograd.grad((expected * probe).sum(), parameters)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_hook_sees_one_sigmoid_weight_per_branch_and_position():
    unit = LSKUnit(16, branches=[(3, 1), (5, 2), (7, 3)])
    seen = []
    unit.attention.register_forward_hook(lambda module, inputs, output: seen.append(output))
    assert unit(torch.randn(3, 16, 9, 10)).shape == (3, 16, 9, 10)
    (weights,) = seen
    assert weights.shape == (3, 3, 9, 10)
    assert ((weights > 0) & (weights < 1)).all()
    assert unit.receptive_fields == [3, 11, 29]


def test_lsknet_decomposition_and_parameters():
    unit = LSKUnit(64)
    assert unit.receptive_fields == [5, 23]  # LSKNet: 5x5, then 7x7 with dilation 3
    assert [conv.padding for conv in unit.depthwise] == [(2, 2), (9, 9)]
    # conv0 + conv_spatial (depthwise, bias) + conv1/conv2 (C -> C/2) + squeeze (2 -> 2, 7x7)
    # + conv (C/2 -> C), all with biases.
    count = (25 + 1) * 64 + (49 + 1) * 64 + 2 * (64 + 1) * 32 + (2 * 49 + 1) * 2 + (32 + 1) * 64
    assert sum(p.numel() for p in unit.parameters()) == count


def test_is_a_selection_unit_and_traces():
    unit = LSKUnit(8).eval()
    assert isinstance(unit, SELECTION_UNITS)
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(torch.fx.symbolic_trace(unit)(x), unit(x))


def test_one_step_is_refused():
    with pytest.raises(ValueError, match="at least two"):
        LSKUnit(8, branches=[(5, 1)])
    with pytest.raises(ValueError, match="two positive ints"):
        LSKUnit(8, branches=[(5, 1, 8), (7, 3, 8)])
