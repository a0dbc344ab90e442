"""Weights by Hugging Face hub id, from a cache laid out as huggingface_hub lays it out (no
network: offline mode)."""

import json
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file
from tiny import TINY

import sknet
from sknet.cli import main
from sknet.preprocessing import Preprocessing

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out(cache: Path, repo: str, files: dict[str, Path], commit: str = COMMIT) -> None:
    """``files`` as snapshot ``commit`` of ``repo`` in the cache, ``refs/main`` pointing at it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "hub-cache"
    folder.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return folder


def test_a_timm_id_loads_from_the_cache_and_pretrained_true_takes_it(cache, tmp_path):
    torch.manual_seed(0)
    theirs = timm.create_model("skresnet18").eval()
    save_file(theirs.state_dict(), str(tmp_path / "model.safetensors"))
    config = {"architecture": "skresnet18", "num_classes": 1000,
              "pretrained_cfg": {**theirs.pretrained_cfg, "input_size": [3, 224, 224]}}
    (tmp_path / "config.json").write_text(json.dumps(config, default=str))
    files = {"model.safetensors": tmp_path / "model.safetensors",
             "config.json": tmp_path / "config.json"}
    lay_out(cache, "timm/skresnet18.ra_in1k", files)
    x = torch.randn(2, 3, 64, 64)
    model = sknet.create_model("skresnet18", pretrained="hf-hub:timm/skresnet18.ra_in1k").eval()
    assert model.record.name == "skresnet18" and model.record.preprocessing.interpolation
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-4, atol=1e-5)
    again = sknet.create_model("skresnet18", pretrained=True).eval()  # the registry's hub id
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 model.state_dict().values(), strict=True))
    pinned = sknet.load_pretrained(f"hf-hub:timm/skresnet18.ra_in1k@{COMMIT}")
    assert pinned.record.name == "skresnet18"


def test_our_own_weights_by_id_on_the_command_line(cache, tmp_path, capsys):
    model = sknet.create_model("sknet_digits", **TINY)
    names = [f"digit {i}" for i in range(10)]
    model.save_pretrained(tmp_path / "release", class_names=names, dataset="digits",
                          preprocessing={"input_size": 8, "mean": [0.3], "std": [0.4]})
    files = {name: tmp_path / "release" / name for name in ("model.safetensors", "config.json")}
    lay_out(cache, "me/digits", files)
    loaded = sknet.load_pretrained("hf-hub:me/digits")
    assert loaded.record.class_names == tuple(names)
    assert main(["eval", "--checkpoint", "hf-hub:me/digits", "--data", "digits:0-9"]) == 2
    assert "class names (digit 0, digit 1, digit 2, ...) differ" in capsys.readouterr().err


def test_what_is_missing_is_said_in_one_line(cache, monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"hf-hub:timm/nothing: no model\.safetensors or "
                       r"pytorch_model\.bin of timm/nothing in the Hugging Face cache .*hub-cache "
                       r"\(offline: HF_HUB_OFFLINE=1\).*hf download timm/nothing") as error:
        sknet.load_pretrained("hf-hub:timm/nothing")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"a hub id is hf-hub:ORG/NAME"):
        sknet.load_pretrained("hf-hub:no-slash")
    with pytest.raises(ValueError, match=r"no published weights of 'sknet26' are known"):
        sknet.create_model("sknet26", pretrained=True)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    status = main(["eval", "--checkpoint", "hf-hub:timm/skresnet18.ra_in1k"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == [
        "sknet eval: error: hub ids (hf-hub:...) need the huggingface_hub package: "
        "pip install 'sknet[hub]'"
    ]


def test_a_resnest_id_and_its_folder_load_with_timms_preprocessing(cache, tmp_path):
    torch.manual_seed(0)
    theirs = timm.create_model("resnest14d").eval()
    timm.models.save_for_hf(theirs, str(tmp_path / "hub"), safe_serialization=True)
    files = {name: tmp_path / "hub" / name for name in ("model.safetensors", "config.json")}
    lay_out(cache, "timm/resnest14d.gluon_in1k", files)
    model = sknet.create_model("resnest14d", pretrained=True).eval()  # the registry's hub id
    cfg = theirs.pretrained_cfg
    assert model.record.preprocessing == Preprocessing(
        224, 256, "bilinear", tuple(cfg["mean"]), tuple(cfg["std"])
    )
    from_folder = sknet.load_pretrained(tmp_path / "hub").eval()
    assert from_folder.record.name == "resnest14d"
    model.save_pretrained(tmp_path / "ours")  # our format rebuilds it without timm
    rebuilt = sknet.load_pretrained(tmp_path / "ours").eval()
    assert rebuilt.record == model.record
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        for loaded in (model, from_folder, rebuilt):
            torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-5)
