"""``freeze_norm`` and ``create_model(..., frozen_norm=True)``: every BatchNorm fixed at its
statistics and affine parameters, training at any batch size, weights that go both ways, and the
fast path computing what the plain path does."""

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d

import sknet
from sknet.errors import UserError
from sknet.layers import FrozenBatchNorm, fast, freeze_norm


def randomize_norms(model: nn.Module) -> nn.Module:
    """Random statistics and affine parameters in every BatchNorm (some negative scales), so that
    a frozen norm that lost any of them shows."""
    for norm in model.modules():
        if isinstance(norm, _BatchNorm):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            if norm.affine:
                sign = torch.randint(0, 2, norm.weight.shape) * 2 - 1
                norm.weight.data.uniform_(0.5, 1.5).mul_(sign)
                norm.bias.data.uniform_(-0.5, 0.5)
    return model


def norm_kinds(model: nn.Module) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, (_BatchNorm, FrozenBatchNorm, FrozenBatchNorm2d)):
            kinds[type(module).__name__] = kinds.get(type(module).__name__, 0) + 1
    return kinds


@pytest.mark.parametrize(
    ("name", "shape"),
    [("sknet_digits", (3, 1, 16, 16)), ("sk_shufflenet_v2_x0_5", (3, 3, 64, 64))],
)
def test_every_batchnorm_becomes_frozen_and_trains_as_eval_computes(name, shape):
    """The SK fuse BatchNorm included; the frozen model in training mode computes what the
    original computes in eval mode, and it runs a batch of one."""
    model = randomize_norms(sknet.create_model(name)).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = model(x)
    count = norm_kinds(model)["BatchNorm2d"]
    frozen = freeze_norm(model).train()
    assert frozen is model
    assert norm_kinds(frozen) == {"FrozenBatchNorm2d": count}
    unit = next(iter(frozen.sk_units().values()))
    assert isinstance(unit.attention.fuse.bn, FrozenBatchNorm2d)
    assert not list(unit.attention.fuse.bn.parameters())
    out = frozen(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    frozen(x[:1]).sum().backward()  # a batch of one trains
    assert all(p.grad is not None for p in frozen.parameters())


@pytest.mark.parametrize("kind", [nn.BatchNorm1d, nn.BatchNorm3d, nn.SyncBatchNorm, "no-affine"])
def test_other_batchnorms_become_our_frozen_norm(kind):
    """BatchNorm1d/3d (SKConv1d/3d), SyncBatchNorm (any input rank) and one without affine
    parameters: the eval-mode map, at a batch of one in training mode."""
    if kind == "no-affine":
        norm, x = nn.BatchNorm2d(6, affine=False), torch.randn(1, 6, 3, 5)
    else:
        norm = kind(6)
        x = torch.randn(1, 6, 3, 4, 5) if kind is nn.BatchNorm3d else torch.randn(1, 6, 7)
    randomize_norms(norm).eval()
    expected = norm(x)
    frozen = freeze_norm(norm).train()
    expected_kind = FrozenBatchNorm2d if kind == "no-affine" else FrozenBatchNorm
    assert type(frozen) is expected_kind
    torch.testing.assert_close(frozen(x), expected)


@pytest.mark.parametrize(("layer", "shape"), [(sknet.SKConv1d, (1, 8, 9)),
                                               (sknet.SKConv3d, (1, 8, 3, 5, 4))])
def test_sk_units_of_every_dimension_train_at_batch_one(layer, shape):
    unit = randomize_norms(layer(8, 8, branches=[(3, 1, 2), (3, 2, 2)], min_dim=4)).eval()
    x = torch.randn(shape)
    expected = unit(x)
    freeze_norm(unit).train()
    assert norm_kinds(unit) == {"FrozenBatchNorm": 2, "FrozenBatchNorm2d": 1}  # fuse BN is 2D
    torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-6)


def test_a_shared_batchnorm_stays_shared_and_no_statistics_are_refused():
    shared = nn.BatchNorm2d(4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    freeze_norm(model)
    assert model[0] is model[2] and isinstance(model[0], FrozenBatchNorm2d)
    untracked = nn.BatchNorm2d(4, track_running_stats=False)
    model = nn.Sequential(nn.BatchNorm2d(4), nn.Sequential(untracked))
    with pytest.raises(UserError, match=r"BatchNorm '1\.0' keeps no running statistics"):
        freeze_norm(model)
    assert isinstance(model[0], nn.BatchNorm2d)  # refused before anything changed


def test_frozen_weights_load_into_a_plain_model_and_back(tmp_path):
    """``save_pretrained`` of a frozen model (no batch counters) loads through our loader into a
    plain model, and a plain state dict loads into a frozen model; the record is the same."""
    plain = randomize_norms(sknet.create_model("sknet_digits", num_classes=4)).eval()
    frozen = freeze_norm(copy.deepcopy(plain))
    assert not any(key.endswith("num_batches_tracked") for key in frozen.state_dict())
    assert frozen.record == plain.record  # frozen_norm is not recorded: the weights are the same
    sknet.save_pretrained(frozen, tmp_path / "frozen")
    loaded = sknet.load_pretrained(tmp_path / "frozen").eval()
    assert norm_kinds(loaded).keys() == {"BatchNorm2d"}
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), plain(x))
    again = sknet.create_model("sknet_digits", num_classes=4, frozen_norm=True)
    again.load_state_dict(plain.state_dict())  # strict: the batch counters are dropped
    refrozen = sknet.create_model("sknet_digits", pretrained=tmp_path / "frozen", frozen_norm=True)
    with torch.no_grad():
        torch.testing.assert_close(again(x), plain(x))
        torch.testing.assert_close(refrozen.train()(x), plain(x))


def test_create_model_freezes_a_features_only_model():
    features = sknet.create_model("sknet26", features_only=True, out_indices=(1, 2),
                                  frozen_norm=True)
    assert set(norm_kinds(features)) == {"FrozenBatchNorm2d"}
    assert [f.shape[1] for f in features.train()(torch.randn(1, 3, 32, 32))] == [256, 512]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(
    ("name", "size"), [("sknet26", 32), ("sk_shufflenet_v2_x0_5", 64), ("skresnet18", 32)]
)
def test_fast_path_with_frozen_norms_equals_the_plain_path(name, size, batch, training):
    """fp64: output, input gradient and every parameter gradient, fast path against
    ``fast.disabled()``: in training mode a frozen norm runs as its module, in eval mode the
    fast path folds it into its convolution where it folds an eval-mode BatchNorm."""
    torch.manual_seed(0)
    model = freeze_norm(randomize_norms(sknet.create_model(name, num_classes=5))).double()
    model.train(training)
    x = torch.randn(batch, 3, size, size, dtype=torch.float64)
    assert fast.active(x)
    stem = next(m for m in model.modules() if isinstance(m, sknet.layers.ConvBnAct))
    assert fast.folds_bn(stem, x) is not training
    results = []
    for door in (contextlib.nullcontext, fast.disabled):
        model.zero_grad()
        inputs = x.clone().requires_grad_()
        with door():
            out = model(inputs)
            out.backward(torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out))
        grads = {key: p.grad for key, p in model.named_parameters()}
        results.append((out.detach(), inputs.grad, grads))
    (out, grad, grads), (plain_out, plain_grad, plain_grads) = results
    torch.testing.assert_close(out, plain_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-10, atol=1e-12)
    assert grads.keys() == plain_grads.keys()
    for key, value in grads.items():
        torch.testing.assert_close(value, plain_grads[key], rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize(
    ("name", "shape"),
    [("sknet_digits", (2, 1, 16, 16)), ("resnest_digits", (2, 1, 32, 32)),
     ("lsknet_digits", (2, 1, 32, 32))],
)
def test_deploy_folds_frozen_norms(name, shape):
    """A model frozen for detection deploys as the plain one does: no norm of either kind left
    (LSKNet's pre-norms through its own fold), the output of the plain model in eval mode."""
    torch.manual_seed(0)
    plain = randomize_norms(sknet.create_model(name)).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = plain(x)
        frozen = freeze_norm(copy.deepcopy(plain))
        deployed = sknet.deploy(frozen)
        assert norm_kinds(frozen) and not norm_kinds(deployed)
        torch.testing.assert_close(deployed(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("door", [contextlib.nullcontext, fast.disabled])
def test_a_frozen_model_counts_its_norms_as_the_plain_one(door):
    """``profile_model``'s BatchNorm multiply-adds: frozen norms count as BatchNorms, whether the
    fast path folds them (eval mode) or runs them."""
    plain = sknet.create_model("sknet26").eval()
    frozen = freeze_norm(copy.deepcopy(plain)).eval()
    with door():
        counts = [sknet.profile_model(model, 32, 3).bn_macs for model in (plain, frozen)]
    assert counts[0] > 0 and counts[0] == counts[1]


def test_deploy_folds_our_frozen_norm_of_any_dimension():
    """SKConv1d's branch norms become our FrozenBatchNorm (its fuse norm torchvision's)."""
    unit = randomize_norms(sknet.SKConv1d(8, 8, branches=[(3, 1, 2), (3, 2, 2)], min_dim=4))
    x = torch.randn(2, 8, 9)
    with torch.no_grad():
        expected = unit.eval()(x)
        frozen = freeze_norm(copy.deepcopy(unit))
        deployed = sknet.deploy(frozen)
        assert norm_kinds(frozen) == {"FrozenBatchNorm": 2, "FrozenBatchNorm2d": 1}
        assert not norm_kinds(deployed)
        torch.testing.assert_close(deployed(x), expected, rtol=1e-5, atol=1e-6)


def test_the_bn_fold_is_for_the_cpu_only():
    """Measured faster on the CPU only; on a GPU the BatchNorm kernel runs (benchmarks/RESULTS.md:
    the fold made eval slower on an H200). The meta device stands in for any other device."""
    stem = sknet.create_model("sknet26").eval().stem[0]
    assert fast.folds_bn(stem, torch.randn(2, 3, 32, 32))
    assert not fast.folds_bn(stem, torch.randn(2, 3, 32, 32, device="meta"))
    assert not fast.folds_bn(freeze_norm(stem), torch.randn(2, 3, 32, 32, device="meta"))
