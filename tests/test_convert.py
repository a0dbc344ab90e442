import pytest
import torch
import torchvision
from torch import nn

import sknet
from sknet import SKConv, convert_to_sk
from sknet.profiling import profile


def test_torchvision_resnext50_becomes_sknet50():
    model = torchvision.models.resnext50_32x4d()
    replaced = convert_to_sk(model)
    assert len(replaced) == 16
    assert [r.conv for r in replaced[:2]] == ["layer1.0.conv2", "layer1.1.conv2"]
    assert replaced[3].bn == "layer2.0.bn2" and replaced[3].stride == 2
    assert all(r.groups == 32 and r.branches == ((3, 1, 32), (3, 2, 32)) for r in replaced)
    params = sum(p.numel() for p in model.parameters())
    assert params == profile("sknet50").params == 27_479_784
    assert isinstance(model.layer3[5].conv2, SKConv)
    assert isinstance(model.layer3[5].bn2, nn.Identity)


def test_converted_model_trains():
    model = torchvision.models.resnext50_32x4d(num_classes=5)
    convert_to_sk(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5)
    nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()


def test_shufflenet_conversion_equals_the_registered_sk_model():
    model = torchvision.models.shufflenet_v2_x1_0()
    replaced = convert_to_sk(model, reduction=4)
    assert len(replaced) == 19  # 16 units + the projection branch of 3 down-sampling units
    assert replaced[0].conv == "stage2.0.branch1.0" and replaced[0].groups == 24
    ours = sknet.create_model("sk_shufflenet_v2_x1_0")
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in ours.parameters()
    )


def _randomize(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_first_branch_keeps_the_original_conv_and_bn():
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4, bias=True)
    original = nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU())
    _randomize(original)
    original.eval()
    x = torch.randn(2, 8, 9, 9)
    expected = original(x)
    converted = nn.Sequential(*original)  # the same modules in a new container
    (replacement,) = convert_to_sk(converted, min_dim=4)
    sk = converted[0]
    assert replacement.copied and not sk.training
    torch.testing.assert_close(sk.branches[0](x), expected, rtol=1e-5, atol=1e-5)
    assert sk(x).shape == expected.shape == (2, 8, 5, 5)


def test_without_copy_the_first_branch_is_freshly_initialised():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8))
    weight = model[0].weight.clone()
    (replacement,) = convert_to_sk(model, copy_weights=False)
    assert not replacement.copied
    assert not torch.equal(model[0].branches[0].conv.weight, weight)


def test_options_and_filter():
    model = torchvision.models.resnext50_32x4d()
    replaced = convert_to_sk(
        model, extra_branches=[(3, 2), (3, 3)], attention=False,
        include=lambda name, conv: conv.stride == (1, 1),
    )
    assert len(replaced) == 13  # the three stride-2 units are skipped
    unit = model.layer2[1].conv2
    assert unit.receptive_fields == [3, 5, 7] and unit.attention is None
    assert not isinstance(model.layer2[0].conv2, SKConv)


def test_dilated_conv_keeps_its_dilation_in_the_first_branch():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4), nn.BatchNorm2d(16))
    (replacement,) = convert_to_sk(model)
    assert replacement.branches == ((3, 2, 4), (3, 3, 4))
    assert model(torch.randn(2, 16, 7, 7)).shape == (2, 16, 7, 7)


@pytest.mark.parametrize(
    "model",
    [
        torchvision.models.resnet18(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=0, groups=8), nn.BatchNorm2d(8)),  # shrinks
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.BatchNorm2d(8)),
    ],
    ids=["plain-convs", "valid-padding", "bn-not-next"],
)
def test_no_eligible_convolution_is_a_clear_error(model):
    with pytest.raises(ValueError, match="no eligible convolution"):
        convert_to_sk(model)


def test_existing_sk_units_are_not_converted_again():
    model = torchvision.models.resnext50_32x4d()
    convert_to_sk(model)
    with pytest.raises(ValueError, match="no eligible convolution in ResNet"):
        convert_to_sk(model)
