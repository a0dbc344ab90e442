"""The split-attention convolution against a literal reference, timm's unit, and the SK unit."""

import pytest
import torch
import torch.nn.functional as F
from timm.layers import SplitAttn, make_divisible
from torch import nn

from sknet.analysis.capture import selecting_units
from sknet.layers import SELECTION_UNITS, SKConv, SplitAttentionConv, split_attention_width
from sknet.models import create_model

# (in_channels, C, radix, cardinality): ResNeSt-50's 2s1x, the 4s2x and 1s4x ablation layouts,
# and a radix of 3.
LAYOUTS = [(16, 32, 2, 1), (16, 24, 4, 2), (24, 48, 1, 4), (12, 36, 3, 1)]
LAYOUT_IDS = ["2s1x", "4s2x", "1s4x", "3s1x"]


def randomize(module: nn.Module) -> nn.Module:
    """Random weights and biases, non-trivial BatchNorm statistics and affine parameters."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                parameter.uniform_(-0.5, 0.5)
            elif parameter.ndim > 1:
                parameter.normal_(0, parameter[0].numel() ** -0.5)
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
    return module


def batch_norm(y: torch.Tensor, bn: nn.BatchNorm2d, rows: slice, train: bool) -> torch.Tensor:
    """BatchNorm of channels ``rows`` written out: batch statistics (biased variance) in
    training, the running ones in eval."""
    axes = [0, *range(2, y.ndim)]
    if train:
        mean, var = y.mean(axes), y.var(axes, unbiased=False)
    else:
        mean, var = bn.running_mean[rows], bn.running_var[rows]
    shape = (1, -1, *[1] * (y.ndim - 2))
    normalised = (y - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + bn.eps)
    return normalised * bn.weight[rows].reshape(shape) + bn.bias[rows].reshape(shape)


def reference(
    unit: SplitAttentionConv, x: torch.Tensor, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """ResNeSt's split attention as its paper describes it, one cardinal group and one split at a
    time: output [N, C, H', W'] and weights [N, radix, C].

    Split r of cardinal group k convolves the (r K + k)-th slice of the input into C / K channels
    (BN, ReLU). Group k pools the sum of its splits, reduces it (its own slice of the reduction's
    rows, bias, BN, ReLU), expands it to radix x C / K logits (its slice of the expansion's rows,
    bias), takes a
    softmax over its splits (a sigmoid for radix 1) and sums its splits so weighted.
    """
    radix, groups = unit.radix, unit.cardinality
    conv, bn = unit.splits.conv, unit.splits.bn
    attention = unit.attention
    per_group = attention.channels // groups
    reduced = attention.reduce.conv.out_channels // groups
    slice_width = x.shape[1] // (groups * radix)
    outputs, weights = [], []
    for k in range(groups):
        splits = []
        for r in range(radix):
            index = r * groups + k
            part = x[:, index * slice_width : (index + 1) * slice_width]
            rows = slice(index * per_group, (index + 1) * per_group)
            y = F.conv2d(part, conv.weight[rows], None, conv.stride, conv.padding, conv.dilation)
            splits.append(torch.relu(batch_norm(y, bn, rows, train)))
        pooled = sum(splits).mean((2, 3))
        rows = slice(k * reduced, (k + 1) * reduced)
        reduction = attention.reduce.conv
        z = pooled @ reduction.weight[rows].flatten(1).T + reduction.bias[rows]
        z = torch.relu(batch_norm(z, attention.reduce.bn, rows, train))
        rows = slice(k * radix * per_group, (k + 1) * radix * per_group)
        logits = z @ attention.expand.weight[rows].flatten(1).T + attention.expand.bias[rows]
        logits = logits.reshape(-1, radix, per_group)
        a = logits.sigmoid() if radix == 1 else logits.softmax(1)
        outputs.append(sum(a[:, r, :, None, None] * splits[r] for r in range(radix)))
        weights.append(a)
    return torch.cat(outputs, 1), torch.cat(weights, 2)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("in_channels", "channels", "radix", "groups"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("stride", [1, 2])
def test_forward_and_gradients_match_the_reference(in_channels, channels, radix, groups, stride,
                                                   train):
    torch.manual_seed(0)
    unit = randomize(
        SplitAttentionConv(in_channels, channels, 3, stride, radix=radix, cardinality=groups)
    ).double().train(train)
    seen = []
    unit.attention.register_forward_hook(lambda module, inputs, output: seen.append(output))
    x = torch.randn(3, in_channels, 7, 7, dtype=torch.float64, requires_grad=True)
    side = (7 - 1) // stride + 1
    probe = torch.randn(3, channels, side, side, dtype=torch.float64)

    out = unit(x)
    (weights,) = seen
    (out * probe).sum().backward()
    grads = [x.grad, *[p.grad for p in unit.parameters()]]
    x.grad = None
    unit.zero_grad(set_to_none=True)

    expected, expected_weights = reference(unit, x, train)
    (expected * probe).sum().backward()
    expected_grads = [x.grad, *[p.grad for p in unit.parameters()]]

    assert out.shape == expected.shape == probe.shape
    assert weights.shape == (3, radix, channels)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    for got, wanted in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, wanted, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("in_channels", "channels", "radix", "groups"), LAYOUTS, ids=LAYOUT_IDS)
def test_timm_split_attention_computes_the_same(in_channels, channels, radix, groups):
    theirs = randomize(SplitAttn(
        in_channels, channels, groups=groups, radix=radix, norm_layer=nn.BatchNorm2d
    )).eval()
    ours = SplitAttentionConv(in_channels, channels, radix=radix, cardinality=groups).eval()
    renamed = {"conv.": "splits.conv.", "bn0.": "splits.bn.", "bn1.": "attention.reduce.bn.",
               "fc1.": "attention.reduce.conv.", "fc2.": "attention.expand."}
    state = {}
    for key, value in theirs.state_dict().items():
        prefix = next(p for p in renamed if key.startswith(p))
        state[renamed[prefix] + key.removeprefix(prefix)] = value
    ours.load_state_dict(state)
    x = torch.randn(2, in_channels, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_attention_sums_to_one_over_radix_and_a_hook_sees_it():
    unit = randomize(SplitAttentionConv(32, 64, radix=4, cardinality=2))
    assert isinstance(unit, SELECTION_UNITS)
    seen = []
    unit.attention.register_forward_hook(lambda module, inputs, output: seen.append(output))
    out = unit(torch.randn(4, 32, 5, 5))
    (weights,) = seen
    assert out.shape == (4, 64, 5, 5) and weights.shape == (4, 4, 64)
    torch.testing.assert_close(weights.sum(1), torch.ones(4, 64))
    assert (weights > 0).all()


def test_radix_one_is_a_sigmoid_gate_of_the_conv():
    unit = randomize(SplitAttentionConv(16, 32, radix=1, cardinality=4)).eval()
    x = torch.randn(2, 16, 6, 6)
    seen = []
    unit.attention.register_forward_hook(lambda module, inputs, output: seen.append(output))
    out = unit(x)
    (gate,) = seen
    assert gate.shape == (2, 1, 32) and ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(out, unit.splits(x) * gate[:, 0, :, None, None])


def copy_into_sk(unit: SplitAttentionConv) -> SKConv:
    """The SK unit with split input and the unit's splits as branches, sharing its weights."""
    channels, radix = unit.attention.channels, unit.radix
    kernel = unit.splits.conv.kernel_size[0]
    sk = SKConv(
        unit.splits.conv.in_channels, channels, branches=[(kernel, 1, 1)] * radix,
        split_input=True,
    )
    assert sk.attention.fuse.conv.out_channels == unit.attention.reduce.conv.out_channels
    state = {
        "attention.fuse.conv.weight": unit.attention.reduce.conv.weight,
        "attention.select.weight": unit.attention.expand.weight,
        **{f"attention.fuse.bn.{k}": v for k, v in unit.attention.reduce.bn.state_dict().items()},
    }
    for r in range(radix):
        rows = slice(r * channels, (r + 1) * channels)
        state[f"branches.{r}.conv.weight"] = unit.splits.conv.weight[rows]
        for key, value in unit.splits.bn.state_dict().items():
            state[f"branches.{r}.bn.{key}"] = value if value.ndim == 0 else value[rows]
    sk.load_state_dict(state)
    return sk


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_cardinality_one_is_sk_with_split_input_up_to_the_expansion_bias(train):
    """The module docstring's claim: without the biases the unit is SKConv(split_input=True) with
    equal kernels; the reduction's bias is absorbed by BN; the expansion's is a real difference."""
    torch.manual_seed(1)
    unit = randomize(SplitAttentionConv(16, 32, radix=2)).train(train)
    x = torch.randn(4, 16, 6, 6)
    with torch.no_grad():
        unit.attention.reduce.conv.bias.zero_()
        unit.attention.expand.bias.zero_()
        sk = copy_into_sk(unit).train(train)
        torch.testing.assert_close(unit(x), sk(x))

        shift = torch.rand(unit.attention.reduce.conv.bias.shape) - 0.5
        unit.attention.reduce.conv.bias.copy_(shift)
        sk.attention.fuse.bn.running_mean -= shift  # where BN absorbs the bias in eval
        unit.eval()
        sk.eval()
        torch.testing.assert_close(unit(x), sk(x))

        unit.attention.expand.bias.uniform_(-1, 1)
        assert (unit(x) - sk(x)).abs().max() > 1e-3


def test_attention_width_is_timms_rounding():
    for channels in range(8, 1100, 4):
        for radix in (1, 2, 3, 4):
            expected = make_divisible(channels * radix / 4, 8, min_value=32)
            assert split_attention_width(channels, radix) == expected
    assert split_attention_width(36, 2, min_dim=8) == 24  # 18 rounds to 16, more than 10% off


def test_batch_of_one_in_training_is_a_clear_error_and_bad_layouts_are_refused():
    unit = SplitAttentionConv(8, 16, radix=2)
    with pytest.raises(ValueError, match="batch of at least 2"):
        unit(torch.randn(1, 8, 4, 4))
    assert unit.eval()(torch.randn(1, 8, 4, 4)).shape == (1, 16, 4, 4)
    with pytest.raises(ValueError, match="cardinality 3 must divide"):
        SplitAttentionConv(12, 24, radix=2, cardinality=3)
    with pytest.raises(ValueError, match="must be positive"):
        SplitAttentionConv(8, 16, radix=0)


def test_the_analysis_takes_split_attention_split_by_split_and_refuses_radix_one():
    """Its splits share one kernel: the analysis contrasts the last split with the first
    (sknet.analysis.kinds); at radix 1 there is no choice, and it says so in one line."""
    assert SplitAttentionConv(12, 16, radix=3, dilation=2).receptive_fields == [5, 5, 5]
    with torch.device("meta"):
        model = create_model("resnest14d")
        gated = create_model("resnest50d_1s4x24d")
    assert list(selecting_units(model)) == list(model.sk_units())
    with pytest.raises(ValueError, match="its split-attention units have radix 1"):
        selecting_units(gated)
