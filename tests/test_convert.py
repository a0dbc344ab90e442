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
        nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2)),
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=0, groups=8)),
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
    ],
    ids=["pointwise-only", "valid-padding", "only-the-input-conv"],
)
def test_no_eligible_convolution_is_a_clear_error(model):
    with pytest.raises(ValueError, match="no eligible convolution"):
        convert_to_sk(model)


def test_torchvision_resnet18_gets_sk_and_trains():
    """Ungrouped convs (what other SK ports are most asked for): SK-ResNet's split input."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    replaced = convert_to_sk(model)
    assert len(replaced) == 16 and replaced[0].conv == "layer1.0.conv1"  # the stem stays plain
    assert all(r.split_input and r.branches == ((3, 1, 1), (3, 2, 1)) for r in replaced)
    assert not any(r.copied for r in replaced)  # a branch on half the input has another shape
    assert not isinstance(model.conv1, SKConv)
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    assert _losses_fall(model, x, y)


def test_resnet18_converted_in_its_first_convs_is_skresnet18():
    model = torchvision.models.resnet18()
    replaced = convert_to_sk(
        model, include=lambda name, conv: name.endswith(".conv1"), reduction=8, min_dim=16
    )
    assert len(replaced) == 8
    assert sum(p.numel() for p in model.parameters()) == profile("skresnet18").params


def test_grouped_branches_keep_the_original_weights():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                          nn.BatchNorm2d(8))
    (replacement,) = convert_to_sk(model, groups=1, split_input=False, min_dim=4)
    assert replacement.copied and not replacement.split_input
    (other,) = convert_to_sk(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)), groups=4,
        min_dim=4,
    )
    assert other.branches == ((3, 1, 4), (3, 2, 4)) and not other.copied


def test_a_conv_without_batchnorm_keeps_what_it_computes():
    """The first branch (conv, a fresh BN, ReLU) computes the original conv + ReLU in eval mode:
    the conv bias becomes the BN's shift."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, bias=True),
        nn.ReLU(),
    )
    model.eval()
    x = torch.randn(2, 3, 9, 9)
    hidden = model[1](model[0](x))
    expected = model[3](model[2](hidden))
    (replacement,) = convert_to_sk(model, min_dim=4, split_input=False)
    assert replacement.bn is None and replacement.conv == "2" and replacement.copied
    torch.testing.assert_close(model[2].branches[0](hidden), expected, rtol=1e-4, atol=1e-4)
    assert model(x).shape == (2, 8, 9, 9)


class Signal1d(nn.Module):
    """A small 1D network for signals: conv stem, two 5-tap convs (one without BN), pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 8, 7, padding=3), nn.BatchNorm1d(8), nn.ReLU(),
            nn.Conv1d(8, 16, 5, stride=2, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Conv1d(16, 16, 5, padding=2), nn.ReLU(),
        )
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(-1))


class Volume3d(nn.Module):
    """A small 3D network for volumes (medical-imaging style): stem, two 3x3x3 blocks, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
            nn.Conv3d(8, 8, 3, padding=1, groups=2), nn.BatchNorm3d(8), nn.ReLU(),
            nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
        )
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((-3, -2, -1)))


def _losses_fall(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 8) -> bool:
    """A few SGD steps on one batch lower the loss (and every parameter gets a gradient)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    return losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("network", "shape", "layer"),
    [(Signal1d, (6, 1, 40), sknet.SKConv1d), (Volume3d, (6, 1, 8, 8, 8), sknet.SKConv3d)],
    ids=["1d", "3d"],
)
def test_1d_and_3d_networks_get_sk_and_train(network, shape, layer):
    torch.manual_seed(0)
    model = network()
    replaced = convert_to_sk(model, min_dim=4)
    assert len(replaced) == 2 and all(r.dims == layer.dims for r in replaced)
    assert all(isinstance(model.features[int(r.conv.split(".")[1])], layer) for r in replaced)
    x, y = torch.randn(shape), torch.tensor([0, 1, 2, 0, 1, 2])
    assert model(x).shape == (6, 3)
    assert _losses_fall(model, x, y)


def test_existing_sk_units_are_not_converted_again():
    model = torchvision.models.resnext50_32x4d()
    convert_to_sk(model)
    with pytest.raises(ValueError, match="no eligible convolution in ResNet"):
        convert_to_sk(model)
