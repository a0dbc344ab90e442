"""The fast path (the default forward, :mod:`sknet.layers.fast`) against the plain forward of the
same modules (Eqs. 1-6 as written, conv -> BN -> ReLU), which runs with the door closed."""

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sknet import SKConv, SKConv1d, SKConv3d
from sknet.layers import ConvBnAct, SKAttention, fast
from sknet.layers.fast.conv import convolve
from sknet.layers.fast.cpu_conv import RoutedConv2d, weight_grad_route
from sknet.models.resnext import BlockOptions, Bottleneck


def plain(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` by the plain forward: the reference the fast path is checked against."""
    with fast.disabled():
        return module(x)


def test_the_door_switches_and_closes_for_captured_graphs(monkeypatch):
    """One switch (``set_enabled``, ``disabled()``, ``SKNET_FAST_PATH=0`` at import), and the door
    closes by itself for fx proxies and while exporting."""
    x = torch.zeros(1)
    assert fast.is_enabled() and fast.active(x)
    with fast.disabled():
        assert not fast.active(x)
        with fast.disabled():
            pass
        assert not fast.is_enabled()
    assert fast.active(x)
    fast.set_enabled(False)
    try:
        assert not fast.active(x)
    finally:
        fast.set_enabled(True)
    graph = torch.fx.Graph()
    assert not fast.active(torch.fx.Proxy(graph.placeholder("x")))
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    assert not fast.active(x)
    code = "from sknet.layers import fast; print(fast.is_enabled())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, fast.ENVIRONMENT_VARIABLE: "0"},
    )
    assert result.stdout.strip() == "False", result.stderr[-2000:]


@pytest.mark.parametrize("on", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_forward_hooks_on_the_unit_and_its_attention_fire(train, on):
    """Inside a bottleneck, in training (with autograd) and inference, fast path on and off:
    a forward hook on the SK unit sees its output, one on its attention the weights, once."""
    block = Bottleneck(32, 32, 64, 2, BlockOptions([(3, 1, 8), (3, 2, 8)], True, 4, 8))
    block.train(train)
    unit = block.conv2
    seen: dict[str, list[torch.Tensor]] = {"unit": [], "attention": []}
    unit.register_forward_hook(lambda module, args, out: seen["unit"].append(out.detach()))
    unit.attention.register_forward_hook(
        lambda module, args, out: seen["attention"].append(out.detach())
    )
    fast.set_enabled(on)
    try:
        block(torch.randn(4, 32, 8, 8)).sum().backward()
    finally:
        fast.set_enabled(True)
    assert [t.shape for t in seen["unit"]] == [(4, 32, 4, 4)]
    assert [t.shape for t in seen["attention"]] == [(4, 2, 32)]
    assert unit.attention.fuse.bn.num_batches_tracked.item() == int(train)


def randomize(module: nn.Module) -> None:
    """Random BN statistics and affine parameters (some negative scales) and random conv weights."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.running_mean.uniform_(-0.5, 0.5)
            child.running_var.uniform_(0.5, 2.0)
            sign = torch.randint(0, 2, child.weight.shape) * 2 - 1
            child.weight.data.uniform_(0.5, 1.5).mul_(sign)
            child.bias.data.uniform_(-0.5, 0.5)
        elif isinstance(child, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            child.weight.data.normal_(0, 0.5)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """``|actual - expected| <= rtol |expected|`` in the Euclidean norm of the whole tensor.

    Element-wise relative error is the wrong yardstick for gradients that are sums with heavy
    cancellation (the attention's, through BatchNorm and the softmax): a few elements near zero
    then carry fp32 round-off of 1e-4 relative while the tensor agrees to 1e-7. The fp64 run holds
    the same comparison to 1e-10, which no approximation in the fast path could pass.
    """
    assert actual.shape == expected.shape
    error = torch.linalg.vector_norm((actual - expected).double())
    scale = torch.linalg.vector_norm(expected.double())
    assert error <= rtol * scale, f"relative error {error / scale:.2e} > {rtol:.0e}"


CASES = {
    "M1": {"branches": [(3, 1, 4)]},
    "M2": {"branches": [(3, 1, 4), (3, 2, 4)]},
    "M3": {"branches": [(3, 1, 4), (3, 2, 4), (5, 1, 8)]},
    "M2-naive": {"branches": [(3, 1, 4), (3, 2, 4)], "attention": False},
    "M3-naive": {"branches": [(3, 1, 4), (3, 2, 4), (3, 3, 4)], "attention": False},
    "M2-8-per-group": {"branches": [(3, 1, 2), (3, 2, 2)]},
    "M2-depthwise": {"branches": [(3, 1, 16), (3, 2, 16)]},
    "M3-depthwise": {"branches": [(3, 1, 16), (5, 1, 16), (3, 3, 16)]},
}


def sample_input() -> torch.Tensor:
    """Six samples of different scales, so that the attention's BatchNorm (over the batch of
    pooled statistics) is well conditioned."""
    scale = torch.logspace(-0.5, 0.5, 6)[:, None, None, None]
    return torch.randn(6, 16, 9, 9) * scale


def run(layer: nn.Module, forward, x: torch.Tensor, grad: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output, input gradient, parameter gradients and buffers after one forward/backward."""
    x = x.clone().requires_grad_()
    out = forward(x)
    out.backward(grad.to(out.dtype))
    results = {"output": out, "input grad": x.grad}
    for name, param in layer.named_parameters():
        assert param.grad is not None, f"{name} has no gradient"
        results[f"{name} grad"] = param.grad
    results.update(dict(layer.named_buffers()))
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_reference(case, stride, train, dtype, device):
    """Output, input and parameter gradients, BN running statistics (and their update count).

    Both run the same random weights and input; the reference runs in fp64, so that the fp32
    tolerance (1e-5) measures the fast path, not the reference's own round-off; in fp64 the fast
    path matches to 1e-10, which no approximation could.
    """
    layer = SKConv(16, 16, stride, reduction=2, min_dim=8, **CASES[case])
    randomize(layer)
    layer.train(train)
    reference = copy.deepcopy(layer).double()
    fast = layer.to(device, dtype)
    x = sample_input()
    grad = torch.randn(x.shape[0], 16, *(-(-s // stride) for s in x.shape[2:]))

    got = run(fast, fast, x.to(device, dtype), grad.to(device))
    expected = run(reference, lambda inputs: plain(reference, inputs), x.double(), grad)
    assert list(got) == list(expected)
    for name, value in got.items():
        assert value.dtype == (dtype if value.is_floating_point() else torch.int64), name
        assert value.device.type == device.type, name
        tolerance = 1e-5 if dtype == torch.float32 else 1e-10
        assert_close(value.double().cpu(), expected[name], tolerance)


SHAPES = {1: (6, 16, 17), 2: (6, 16, 9, 9), 3: (6, 16, 5, 6, 5)}
"""Inputs of each dimension: signals, images, volumes (odd sides, so strides round up)."""
LAYERS = {1: SKConv1d, 2: SKConv, 3: SKConv3d}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("split", [False, True], ids=["whole-input", "split-input"])
@pytest.mark.parametrize("case", ["M2", "M3", "M2-naive", "M2-ungrouped"])
@pytest.mark.parametrize("dims", [1, 2, 3], ids=["1d", "2d", "3d"])
def test_every_dimension_and_split_input_equal_the_reference(
    dims, case, split, train, dtype, device
):
    """SKConv1d/SKConv3d and split input: outputs, every gradient and the BN statistics equal
    Eqs. 1-6 written out, at stride 2 (the whole layer, fast path included)."""
    config = {**CASES.get(case, {})}
    if case == "M2-ungrouped":
        config["branches"] = [(3, 1, 1), (3, 2, 1)]
    if split and len(config["branches"]) == 3:
        pytest.skip("16 channels do not split between three branches")
    layer = LAYERS[dims](16, 16, 2, reduction=2, min_dim=8, split_input=split, **config)
    randomize(layer)
    layer.train(train)
    reference = copy.deepcopy(layer).double()
    fast = layer.to(device, dtype)
    scale = torch.logspace(-0.5, 0.5, 6).view(6, *[1] * (dims + 1))
    x = torch.randn(SHAPES[dims]) * scale
    grad = torch.randn(6, 16, *(-(-side // 2) for side in SHAPES[dims][2:]))
    got = run(fast, fast, x.to(device, dtype), grad.to(device))
    expected = run(reference, lambda inputs: plain(reference, inputs), x.double(), grad)
    assert list(got) == list(expected)
    for name, value in got.items():
        tolerance = 1e-5 if dtype == torch.float32 else 1e-10
        assert_close(value.double().cpu(), expected[name], tolerance)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_attention_sums_to_one_in_every_dimension(dims):
    layer = LAYERS[dims](8, 8, branches=[(3, 1, 1), (5, 1, 1), (3, 3, 1)], min_dim=4).eval()
    captured = []
    layer.attention.register_forward_hook(lambda module, inputs, out: captured.append(out))
    out = layer(torch.randn(3, 8, *SHAPES[dims][2:]))
    assert out.shape == (3, 8, *SHAPES[dims][2:])
    (weights,) = captured
    assert weights.shape == (3, 3, 8) and (weights > 0).all()
    assert torch.allclose(weights.sum(1), torch.ones(3, 8))


def test_split_input_gives_each_branch_its_share():
    layer = SKConv(8, 6, branches=[(3, 1, 1), (3, 2, 1)], split_input=True, min_dim=4)
    assert [branch.conv.in_channels for branch in layer.branches] == [4, 4]
    with pytest.raises(ValueError, match=r"split_input needs in_channels \(9\) divisible"):
        SKConv(9, 6, branches=[(3, 1, 1), (3, 2, 1)], split_input=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", ["M2", "M3", "M2-naive"])
def test_sk_then_conv_equals_the_plain_path(case, train, dtype, device):
    """An SK unit and the conv + BN after it (which in training convolves the unit's output
    without keeping it, recomputing it in the backward) against the plain path, with the
    gradients of both units' parameters."""
    layer = SKConv(16, 16, 2, reduction=2, min_dim=8, **CASES[case])
    pair = nn.Sequential(layer, ConvBnAct(16, 24, 1, act=False))
    randomize(pair)
    pair.train(train)
    reference = copy.deepcopy(pair).double()
    pair.to(device, dtype)
    x = sample_input()
    grad = torch.randn(x.shape[0], 24, 5, 5)
    got = run(pair, pair, x.to(device, dtype), grad.to(device))
    expected = run(reference, lambda inputs: plain(reference, inputs), x.double(), grad)
    for name, value in got.items():
        tolerance = 1e-5 if dtype == torch.float32 else 1e-10
        assert_close(value.double().cpu(), expected[name], tolerance)


def tempered_attention_with_bias(self: SKAttention, s: torch.Tensor) -> torch.Tensor:
    """Another attention than the paper's: its modules called as they are (the select conv with
    a bias), a temperature of 0.7 and a tanh before the softmax."""
    z = self.fuse(s.reshape(s.shape[0], self.channels, 1, 1))
    logits = self.select(z).view(s.shape[0], self.num_branches, self.channels)
    return (torch.tanh(logits) / 0.7).softmax(dim=1)


@pytest.mark.parametrize("case", ["M2", "M3"])
def test_training_gradient_follows_any_attention(case, monkeypatch):
    """The training function differentiates whatever ``SKAttention.forward`` computes: with a
    temperature, a tanh and a bias on the select conv, every gradient (the new bias's included)
    equals the plain path's in fp64. A hand-written attention gradient would not follow."""
    monkeypatch.setattr(SKAttention, "forward", tempered_attention_with_bias)
    layer = SKConv(16, 16, 2, reduction=2, min_dim=8, **CASES[case])
    layer.attention.select.bias = nn.Parameter(torch.randn(layer.attention.select.out_channels))
    randomize(layer)
    layer.double()
    reference = copy.deepcopy(layer)
    x = sample_input().double()
    grad = torch.randn(6, 16, 5, 5, dtype=torch.float64)
    got = run(layer, layer, x, grad)
    expected = run(reference, lambda inputs: plain(reference, inputs), x, grad)
    assert "attention.select.bias grad" in got
    for name, value in got.items():
        assert_close(value, expected[name], 1e-10)


@pytest.mark.parametrize(
    ("groups", "stride"), [(4, 1), (8, 2)], ids=["8-per-group", "4-per-group-stride-2"]
)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_no_graph_breaks_under_torch_compile(train, groups, stride):
    """TorchDynamo captures an SK bottleneck as one graph. The fast path's door closes under
    ``torch.compile`` (Dynamo cannot trace the training function's ``torch.autograd.grad``), so
    what it captures is the plain forward, which the compiler fuses itself."""
    branches = [(3, 1, groups), (3, 2, groups)]
    block = Bottleneck(32, 32, 64, stride, BlockOptions(branches, True, 4, 8)).train(train)
    x = torch.randn(2, 32, 6, 6, requires_grad=train)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(block)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_autocast_bf16_runs_the_fast_path_in_bf16(device):
    """Under autocast (CPU here; CUDA AMP with ``SKNET_TEST_DEVICE=cuda``) the fused functions
    keep bf16 tensors and fp32 parameters, and agree with fp32 to bf16 precision."""
    block = Bottleneck(32, 32, 64, 2, BlockOptions([(3, 1, 4), (3, 2, 4)], True, 4, 8))
    randomize(block)
    block.to(device)
    x = torch.randn(4, 32, 8, 8, device=device)
    reference = copy.deepcopy(block)(x)
    x = x.clone().requires_grad_()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = block(x)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert x.grad.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in block.parameters())
    assert_close(out.float(), reference, rtol=0.05)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_channels_last_stays_channels_last(train, device):
    layer = SKConv(16, 16, reduction=2, min_dim=8, **CASES["M2"])
    randomize(layer)
    layer.train(train)
    reference = copy.deepcopy(layer).double()
    layer.to(device)
    x = sample_input()
    grad = torch.randn(x.shape)
    cl = torch.channels_last
    got = run(
        layer, layer, x.to(device).contiguous(memory_format=cl),
        grad.to(device).contiguous(memory_format=cl),
    )
    assert got["output"].is_contiguous(memory_format=cl)
    expected = run(reference, lambda inputs: plain(reference, inputs), x.double(), grad)
    for name, value in got.items():
        assert_close(value.double().cpu(), expected[name])


ROUTES = {
    "nhwc-2": ("nhwc", 2, (1, 1), (1, 1)),
    "nhwc-4-dilated": ("nhwc", 4, (1, 1), (2, 2)),
    "nhwc-4-strided": ("nhwc", 4, (2, 1), (1, 1)),
    "phases-1": ("phases", 1, (1, 1), (2, 2)),
    "phases-8": ("phases", 8, (1, 1), (3, 2)),
}


@pytest.mark.parametrize("case", list(ROUTES))
def test_routed_weight_gradient_equals_autograd(case):
    """Each weight-gradient route against autograd's, on sizes that neither the stride nor the
    dilation divides, in fp64 (1e-10: a wrong pixel pairing would show), with the input gradient
    and the output."""
    route, per_group, stride, dilation = ROUTES[case]
    groups = 3
    padding = dilation  # "same" for a 3x3 kernel
    x = torch.randn(2, groups * per_group, 11, 7, dtype=torch.float64)
    weight = torch.randn(6, per_group, 3, 3, dtype=torch.float64)
    results = []
    for conv in (
        lambda x, w: RoutedConv2d.apply(x, w, stride, padding, dilation, groups, route),
        lambda x, w: F.conv2d(x, w, None, stride, padding, dilation, groups),
    ):
        inputs = x.clone().requires_grad_(), weight.clone().requires_grad_()
        out = conv(*inputs)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        results.append((out, inputs[0].grad, inputs[1].grad))
    for got, expected in zip(*results, strict=True):
        assert_close(got, expected, 1e-10)


@pytest.mark.parametrize(
    ("in_channels", "per_group", "stride", "dilation", "layout", "grad", "expected"),
    [
        (16, 4, 1, 1, torch.contiguous_format, True, "nhwc"),
        (16, 2, 2, 2, torch.contiguous_format, True, "nhwc"),
        (16, 8, 1, 2, torch.contiguous_format, True, "phases"),
        (16, 1, 1, 3, torch.contiguous_format, True, "phases"),
        (16, 8, 1, 1, torch.contiguous_format, True, None),  # oneDNN is fast undilated
        (16, 16, 1, 1, torch.contiguous_format, True, None),  # 16 per group
        (4, 4, 1, 1, torch.contiguous_format, True, None),  # not grouped
        (16, 4, 1, 1, torch.channels_last, True, None),  # NHWC already
        (16, 4, 1, 1, torch.contiguous_format, False, None),  # no weight gradient
    ],
)
def test_weight_grad_route_choice(in_channels, per_group, stride, dilation, layout, grad, expected):
    x = torch.randn(2, in_channels, 8, 8).contiguous(memory_format=layout)
    weight = torch.randn(8, per_group, 3, 3, requires_grad=grad)
    route = weight_grad_route(x, weight, (stride, stride), (dilation, dilation), (dilation,) * 2)
    assert route == expected


@pytest.mark.parametrize("route", ["nhwc", "phases"])
def test_routed_weight_gradient_under_autocast(route):
    """Under CPU autocast the convolution runs in bf16 and the gradients come back in the
    parameters' and input's fp32, close to the fp32 gradients."""
    x = torch.randn(2, 16, 9, 9, requires_grad=True)
    weight = torch.randn(16, 8, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = RoutedConv2d.apply(x, weight, (1, 1), (2, 2), (2, 2), 2, route)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert x.grad.dtype == weight.grad.dtype == torch.float32
    x32, w32 = x.detach().requires_grad_(), weight.detach().requires_grad_()
    F.conv2d(x32, w32, None, 1, 2, 2, 2).square().sum().backward()
    assert_close(weight.grad, w32.grad, rtol=0.05)
    assert_close(x.grad, x32.grad, rtol=0.05)


@pytest.mark.parametrize(
    ("case", "layout", "expected"),
    [
        ("M2", torch.contiguous_format, ["nhwc", "nhwc"]),
        ("M2-8-per-group", torch.contiguous_format, ["phases"]),
        ("M2", torch.channels_last, []),
    ],
)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_sk_branches_route_their_weight_gradient_only_to_train(
    case, layout, expected, train, monkeypatch
):
    """A training SK unit on NCHW input routes its branches' weight gradients per
    :func:`weight_grad_route` (4 channels per group: both; 8: the dilated one); NHWC input and
    inference keep oneDNN's convolution."""
    routes = []
    apply = RoutedConv2d.apply
    monkeypatch.setattr(
        RoutedConv2d, "apply", lambda *args: routes.append(args[-1]) or apply(*args)
    )
    layer = SKConv(16, 16, reduction=2, min_dim=8, **CASES[case]).train(train)
    with torch.set_grad_enabled(train):
        layer(sample_input().contiguous(memory_format=layout))
    assert routes == (expected if train else [])


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "groups"),
    [
        (1, 2, 1, 1),
        (1, 3, 1, 1),
        (3, 2, 2, 4),
        (3, 1, 2, 2),
        (3, 3, 3, 16),
        (3, 2, 1, 1),
        (5, 1, 1, 2),
    ],
)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_convolve_equals_the_plain_convolution(kernel, stride, dilation, groups, layout, device):
    """The fast path's :func:`~sknet.layers.fast.conv.convolve` (subsampled inputs, routed weight
    gradients) against the module's own ``nn.Conv2d``, output and gradients, fp64, on sizes no
    stride divides; the input's gradient keeps its layout."""
    unit = ConvBnAct(16, 16, kernel, stride, dilation, groups).to(device, torch.float64)
    x = torch.randn(3, 16, 11, 9, dtype=torch.float64, device=device)
    x = x.contiguous(memory_format=layout)
    results = []
    for conv in (lambda inputs: convolve(unit, inputs), unit.conv):
        unit.zero_grad()
        inputs = x.clone().requires_grad_()
        out = conv(inputs)
        out.backward(
            torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=device).view_as(out)
        )
        results.append((out, inputs.grad, unit.conv.weight.grad.clone()))
    assert results[0][1].is_contiguous(memory_format=layout)
    for got, expected in zip(*results, strict=True):
        assert_close(got.cpu(), expected.cpu(), 1e-10)
