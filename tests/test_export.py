"""``sknet.deploy``: BatchNorm folded into convolutions, nothing else changed."""

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import sknet
from sknet.layers import ConvBnAct
from sknet.models import create_model, get_entry, list_models


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial statistics and affine parameters in every BatchNorm."""
    for bn in model.modules():
        if isinstance(bn, _BatchNorm):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name", list_models())
def test_deploy_equals_eval(name):
    model = create_model(name, num_classes=10)
    randomize_bn(model)
    model.eval()
    deployed = sknet.deploy(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert not deployed.training
    x = torch.randn(2, get_entry(name).config.get("in_chans", 3), 32, 32)
    with torch.no_grad():
        expected, got = model(x), deployed(x)
    error = torch.linalg.vector_norm(got - expected) / torch.linalg.vector_norm(expected)
    assert error < 1e-5
    # The original is untouched and the module tree keeps its names.
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    names = {n for n, _ in model.named_modules()}
    assert {n for n, _ in deployed.named_modules()} == names


def test_deployed_attention_hooks_still_see_the_weights():
    model = create_model("sknet26", num_classes=10).eval()
    randomize_bn(model)
    deployed = sknet.deploy(model)
    seen = {}
    for name, unit in deployed.sk_units().items():
        unit.attention.register_forward_hook(lambda m, i, o, name=name: seen.update({name: o}))
    with torch.no_grad():
        deployed(torch.randn(3, 3, 32, 32))
    assert len(seen) == 8
    weights = seen["SK_3_1"]
    assert weights.shape == (3, 2, 256)
    torch.testing.assert_close(weights.sum(1), torch.ones(3, 256))


def test_deploy_folds_the_fuse_bn_into_its_conv():
    unit = sknet.create_model("sknet26").sk_units()["SK_2_1"]
    fuse = sknet.deploy(unit).attention.fuse
    assert isinstance(fuse.bn, nn.Identity) and fuse.conv.bias is not None


def test_deploy_rejects_a_batchnorm_it_cannot_fold():
    model = nn.Sequential(ConvBnAct(3, 8, 3), nn.BatchNorm2d(8))
    with pytest.raises(ValueError, match="cannot fold BatchNorm '1'"):
        sknet.deploy(model)


def test_deploy_folds_sync_batchnorm_too():
    model = nn.SyncBatchNorm.convert_sync_batchnorm(create_model("sknet26", num_classes=4))
    randomize_bn(model)
    model.eval()
    deployed = sknet.deploy(model)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in deployed.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), rtol=1e-4, atol=1e-5)
