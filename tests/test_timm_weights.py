"""timm's weights in our models and back: equal outputs, file formats, clear errors."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import ImageNetInfo
from torch import nn

import sknet
from sknet.models import TIMM_ARCHITECTURES, get_entry
from sknet.models.timm_weights import check_geometry, timm_names
from sknet.preprocessing import TIMM_IMAGENET, Preprocessing, timm_preprocessing

INPUT = (2, 3, 64, 64)
MAPPED_ONLY = ("resnest26d", "resnest50d", "resnest200e", "resnest269e")
"""ResNeSt variants not run here, to keep the suite's time: resnest200e and resnest269e (70M and
111M parameters) have resnest101e's stem and blocks, resnest26d and resnest50d resnest14d's; their
names, shapes, parameter counts and layer geometry are checked on the meta device like every
architecture's (docs/weights.md gives their measured differences)."""


def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial statistics and affine parameters in every BatchNorm, and random conv biases
    (conv weights are random already)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
            elif isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def relative_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


def outputs(*models: nn.Module) -> list[torch.Tensor]:
    x = torch.randn(INPUT)
    with torch.no_grad():
        return [model.eval()(x) for model in models]


@pytest.fixture(scope="module")
def sk_timm() -> nn.Module:
    torch.manual_seed(1)
    return randomize(timm.create_model("skresnext50_32x4d", num_classes=5))


@pytest.mark.parametrize(
    ("architecture", "ours"),
    [(theirs, ours) for theirs, ours in TIMM_ARCHITECTURES.items() if theirs not in MAPPED_ONLY],
)
def test_timm_and_ours_compute_the_same_network(architecture, ours):
    theirs = randomize(timm.create_model(architecture, num_classes=7))
    model = sknet.from_timm(theirs)
    assert (model.record.name, model.record.num_classes, model.record.kwargs) == (ours, 7, {})
    got, expected = outputs(model, theirs)
    assert relative_difference(got, expected) < 1e-5

    # Exported, the weights load strictly into a fresh timm model and are timm's own again.
    back = timm.create_model(architecture, num_classes=7)
    back.load_state_dict(sknet.to_timm(model))
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key

    # A bare state dict finds its model by its keys and shapes.
    assert sknet.from_timm(theirs.state_dict()).record.name == ours


@pytest.mark.parametrize(("architecture", "ours"), TIMM_ARCHITECTURES.items())
def test_every_architecture_maps_key_for_key_on_the_meta_device(architecture, ours):
    """Every key to a timm key of the same shape (so the same parameter count), every conv and BN
    of the same geometry; the preprocessing and hub id of a registered pair are timm's."""
    with torch.device("meta"):
        theirs = timm.create_model(architecture)
        model = sknet.create_model(ours)
    names = timm_names(model)
    theirs_state, own = theirs.state_dict(), model.state_dict()
    assert sorted(names.values()) == sorted(theirs_state)
    assert all(own[key].shape == theirs_state[names[key]].shape for key in own)
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in theirs.parameters())
    check_geometry(theirs, model, names, architecture)
    if architecture.startswith("resnest"):
        entry = get_entry(ours)
        assert entry.hub_id == theirs.pretrained_cfg["hf_hub_id"]
        assert entry.preprocessing == timm_preprocessing(theirs.pretrained_cfg)


def test_our_resnest_weights_run_in_timm():
    """ours -> timm: our randomised model's weights in timm's model give our outputs."""
    torch.manual_seed(2)
    model = randomize(sknet.create_model("resnest14d", num_classes=5))
    theirs = timm.create_model("resnest14d", num_classes=5)
    theirs.load_state_dict(sknet.to_timm(model))
    got, expected = outputs(theirs, model)
    assert relative_difference(got, expected) < 1e-5


def test_the_resnest_test_would_see_the_avd_pool_misplaced():
    """The same weights with the avd pool before the split conv instead of after it: the outputs
    move far beyond the tolerance, so the equivalence test checks the pools as well."""
    torch.manual_seed(3)
    theirs = randomize(timm.create_model("resnest14d", num_classes=5))
    misplaced = sknet.from_timm(theirs, avd="before")
    got, expected = outputs(misplaced, theirs)
    assert relative_difference(got, expected) > 1e-2


def test_torchvision_resnext50_has_timm_names():
    import torchvision

    theirs = randomize(torchvision.models.resnext50_32x4d(num_classes=3))
    model = sknet.from_timm(theirs, preprocessing={"interpolation": "bilinear"})
    assert model.record.name == "resnext50_32x4d"
    assert model.record.preprocessing.interpolation == "bilinear"
    got, expected = outputs(model, theirs)
    assert relative_difference(got, expected) < 1e-5


def test_the_test_would_see_a_wrong_mapping(sk_timm):
    """Swapped branches change the output far beyond the tolerance: the check has teeth."""
    state = dict(sk_timm.state_dict())
    swapped = dict(state)
    for key in state:
        if ".paths.0." in key:
            other = key.replace(".paths.0.", ".paths.1.")
            swapped[key], swapped[other] = state[other], state[key]
    got, expected = outputs(sknet.from_timm(swapped), sk_timm)
    assert relative_difference(got, expected) > 1e-2


def test_create_model_reads_a_bare_safetensors_file(tmp_path):
    theirs = randomize(timm.create_model("skresnext50_32x4d"))
    state = {k: v for k, v in theirs.state_dict().items() if "num_batches_tracked" not in k}
    save_file(state, str(tmp_path / "skresnext50_32x4d.safetensors"))

    model = sknet.create_model("sknet50", pretrained=tmp_path / "skresnext50_32x4d.safetensors")
    got, expected = outputs(model, theirs)
    assert relative_difference(got, expected) < 1e-5
    record = model.record
    assert record.name == "sknet50" and record.num_classes == 1000
    assert record.preprocessing == TIMM_IMAGENET
    assert record.class_names == tuple(ImageNetInfo("imagenet-1k").label_names())


def test_a_wrapped_pth_checkpoint_with_ddp_prefixes(sk_timm, tmp_path):
    state = {f"module.{key}": value for key, value in sk_timm.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3, "arch": "skresnext50_32x4d"}, tmp_path / "x.pth")
    model = sknet.from_timm(tmp_path / "x.pth")
    assert model.record.name == "sknet50"
    got, expected = outputs(model, sk_timm)
    assert relative_difference(got, expected) < 1e-5
    assert model.record.class_names is None  # nobody said: no placeholder names


def test_a_timm_hub_folder_rebuilds_and_saves_in_our_format(sk_timm, tmp_path):
    names = ["cat", "dog", "owl", "eel", "ant"]
    timm.models.save_for_hf(
        sk_timm, str(tmp_path / "hub"), model_config={"label_names": names},
        safe_serialization=False,
    )
    assert (tmp_path / "hub" / "pytorch_model.bin").exists()
    model = sknet.from_pretrained(tmp_path / "hub")
    assert (model.record.name, model.record.num_classes, model.record.kwargs) == ("sknet50", 5, {})
    assert model.record.class_names == tuple(names)
    assert model.record.preprocessing == Preprocessing(
        224, 256, "bicubic", tuple(sk_timm.pretrained_cfg["mean"]),
        tuple(sk_timm.pretrained_cfg["std"]),
    )

    # Saved in our format, the folder alone rebuilds the model, its names and preprocessing.
    model.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["model"] == "sknet50" and config["class_names"] == names
    assert config["preprocessing"] == model.record.preprocessing.to_json()
    rebuilt = sknet.from_pretrained(tmp_path / "ours")
    got, expected = outputs(rebuilt, sk_timm)
    assert relative_difference(got, expected) < 1e-5


def test_weights_of_another_model_name_the_first_offending_key(sk_timm, tmp_path):
    save_file(sk_timm.state_dict(), str(tmp_path / "sk.safetensors"))
    with pytest.raises(
        ValueError, match=r"timm key 'layer1\.0\.conv1\.(bn|conv)\.\w+' has no counterpart in "
        r"our 'resnext50_32x4d'; our 'resnext50_32x4d' takes the weights of timm's "
        r"resnext50_32x4d"
    ):
        sknet.create_model("resnext50_32x4d", pretrained=tmp_path / "sk.safetensors")
    with pytest.raises(ValueError, match=r"holds the weights of our 'sknet50', not 'sknet101'"):
        sknet.from_timm(sk_timm, "sknet101")

    state = dict(sk_timm.state_dict())
    state["layer2.1.conv2.attn.fc_select.weight"] = torch.zeros(256, 32, 1, 1)
    with pytest.raises(
        ValueError, match=r"'layer2\.1\.conv2\.attn\.fc_select\.weight' has shape \[256, 32, 1, "
        r"1\], our 'sknet50' needs \[512, 32, 1, 1\] \(stages\.1\.1\.conv2\.attention\.select"
    ):
        sknet.from_timm(state, "sknet50")

    del state["layer2.1.conv2.attn.fc_select.weight"]
    with pytest.raises(
        ValueError, match=r"fit none of our models.*closest: no timm key "
        r"'layer2\.1\.conv2\.attn\.fc_select\.weight', which our 'sknet50' needs"
    ) as error:
        sknet.from_timm(state)
    assert "\n" not in str(error.value)


def test_a_timm_model_with_other_dilations_is_refused():
    theirs = timm.create_model("skresnext50_32x4d", num_classes=5)
    conv = theirs.layer3[2].conv2.paths[1].conv
    conv.dilation, conv.padding = (3, 3), (3, 3)
    with pytest.raises(
        ValueError, match=r"layer3\.2\.conv2\.paths\.1\.conv has dilation \(3, 3\), our "
        r"stages\.2\.2\.conv2\.branches\.1\.conv \(2, 2\): not the same network"
    ):
        sknet.from_timm(theirs)


def test_models_without_a_timm_counterpart_and_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match=r"'stem\.conv\.weight' has no counterpart in timm"):
        sknet.to_timm(sknet.create_model("sknet_digits"))
    with pytest.raises(ValueError, match=r"'sk_shufflenet_v2_x0_5' has no timm counterpart"):
        sknet.to_timm(sknet.create_model("sk_shufflenet_v2_x0_5"))

    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth: not a readable weights file"):
        sknet.from_timm(tmp_path / "garbage.pth")
    torch.save({"conv1.weight": torch.zeros(1), "hook": Executable()}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match=r"pickle\.pth: not a readable weights file") as error:
        sknet.create_model("sknet50", pretrained=tmp_path / "pickle.pth")
    assert "\n" not in str(error.value)
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "note": "x"}, tmp_path / "n.pt")
    with pytest.raises(ValueError, match=r"fit none.*'conv1\.weight' has shape \[1\]"):
        sknet.from_timm(tmp_path / "n.pt")
    torch.save({"model": sknet.create_model("sknet_digits").state_dict()}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt: these are sknet's own key names"):
        sknet.create_model("sknet_digits", pretrained=tmp_path / "last.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pth: no weights there"):
        sknet.from_timm(tmp_path / "missing.pth")


class Executable:
    """An arbitrary object: ``torch.load(weights_only=True)`` must refuse to rebuild it."""
