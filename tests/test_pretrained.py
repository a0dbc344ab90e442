"""The released-weights format: model.safetensors + config.json, one module for every task."""

import errno
import json
import os

import pytest
import torch
from tiny import TINY

import sknet
from sknet.cli import main
from sknet.errors import UserError
from sknet.models import weights_io

PREPROCESSING = {"input_size": 8, "resize": 8, "mean": [0.3], "std": [0.4]}
RECORDED = {**PREPROCESSING, "interpolation": "bilinear", "pixel_scale": 1.0}
"""What a record makes of ``PREPROCESSING``: every field said."""


@pytest.fixture
def model():
    return sknet.create_model("sknet_digits", **TINY).eval()


def test_round_trip_through_a_folder(model, tmp_path):
    names = [f"digit {i}" for i in range(10)]
    path = sknet.save_pretrained(
        model, tmp_path / "release", class_names=names, preprocessing=PREPROCESSING,
        dataset="digits",
    )
    assert path == tmp_path / "release" / "model.safetensors"
    config = json.loads((tmp_path / "release" / "config.json").read_text())
    assert config["model"] == "sknet_digits" and config["num_classes"] == 10
    assert config["kwargs"] == TINY and config["class_names"] == names
    assert config["preprocessing"] == RECORDED and config["dataset"] == "digits"

    loaded = sknet.load_pretrained(tmp_path / "release").eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert loaded.record == model.record.__class__.from_json(config, "config")
    assert loaded.record.class_names == tuple(names)
    assert (loaded.record.name, loaded.record.num_classes, dict(loaded.record.kwargs)) == (
        "sknet_digits", 10, TINY
    )
    assert not list(tmp_path.glob("release/.*"))  # no temporary files left


def test_a_safetensors_file_keeps_its_config_beside_it(model, tmp_path):
    sknet.save_pretrained(model, tmp_path / "best.safetensors")
    assert (tmp_path / "best.json").exists()
    again = sknet.create_model("sknet_digits", pretrained=tmp_path / "best.safetensors").eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(again(x), model(x))
    features = sknet.create_model(
        "sknet_digits", pretrained=tmp_path / "best.json", features_only=True
    )
    assert len(features(x)) == 3


def test_weights_of_another_model_fail_clearly(model, tmp_path):
    sknet.save_pretrained(model, tmp_path / "w")
    with pytest.raises(ValueError, match="holds weights of model 'sknet_digits', not 'sknet26'"):
        sknet.create_model("sknet26", pretrained=tmp_path / "w")
    with pytest.raises(ValueError, match=r"do not fit model 'sknet_digits'.*shape mismatches"):
        sknet.create_model("sknet_digits", pretrained=tmp_path / "w", base_out=32)


def test_another_class_count_keeps_the_backbone_and_says_so(model, tmp_path, caplog):
    """Fine-tuning's first step, as timm and torchvision users write it."""
    sknet.save_pretrained(model, tmp_path / "w")
    torch.manual_seed(5)
    tuned = sknet.create_model("sknet_digits", pretrained=tmp_path / "w", num_classes=5)
    assert tuned.num_classes == 5 and tuned.record.num_classes == 5
    own = model.state_dict()
    kept = {key: value for key, value in tuned.state_dict().items() if not key.startswith("fc.")}
    assert kept and all(torch.equal(value, own[key]) for key, value in kept.items())
    assert tuned.fc.weight.shape == (5, own["fc.weight"].shape[1])
    assert "kept the backbone" in caplog.text
    assert "re-initialised the classifier for 5" in caplog.text
    torch.manual_seed(5)
    again = sknet.load_pretrained(tmp_path / "w", num_classes=5)  # the same, seeded the same
    assert torch.equal(again.fc.weight, tuned.fc.weight)
    caplog.clear()
    sknet.create_model("sknet_digits", pretrained=tmp_path / "w", num_classes=10)
    assert "re-initialised" not in caplog.text  # the same count: the file's own classifier


def test_a_config_that_lies_about_the_weights_fails_clearly(model, tmp_path):
    sknet.save_pretrained(model, tmp_path / "w")
    config_path = tmp_path / "w" / "config.json"
    config = json.loads(config_path.read_text())
    config["num_classes"] = 7
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not fit.*another model or class count"):
        sknet.load_pretrained(tmp_path / "w")


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_damaged_weights_fail_in_one_line(model, tmp_path, damage):
    weights = sknet.save_pretrained(model, tmp_path / "w")
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"x" * 99}[
        damage
    ])
    with pytest.raises(ValueError, match="not a readable safetensors file") as error:
        sknet.load_pretrained(tmp_path / "w")
    assert "\n" not in str(error.value)


def test_missing_or_foreign_config(model, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no weights there"):
        sknet.load_pretrained(tmp_path)
    sknet.save_pretrained(model, tmp_path / "w")
    (tmp_path / "w" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON config"):
        sknet.load_pretrained(tmp_path / "w")
    (tmp_path / "w" / "config.json").write_text('{"model": "sknet50"}')
    with pytest.raises(ValueError, match="not an sknet weights config"):
        sknet.load_pretrained(tmp_path / "w")


def test_a_failed_write_keeps_the_previous_file(model, tmp_path, monkeypatch):
    weights = sknet.save_pretrained(model, tmp_path / "w")
    before = weights.read_bytes()

    def crash(state, path, metadata=None):
        with open(path, "wb") as partial:
            partial.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(weights_io, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        sknet.save_pretrained(model, tmp_path / "w")
    assert weights.read_bytes() == before
    files = sorted(path.name for path in (tmp_path / "w").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]


def test_save_needs_a_registered_model(tmp_path):
    with pytest.raises(ValueError, match=r"no model record: build it with sknet\.create_model"):
        sknet.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "w")


def test_the_method_and_from_pretrained(model, tmp_path):
    assert sknet.from_pretrained is sknet.load_pretrained
    path = model.save_pretrained(tmp_path / "m", preprocessing=PREPROCESSING)
    assert path == tmp_path / "m" / "model.safetensors"
    loaded = sknet.from_pretrained(tmp_path / "m").eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert loaded.record.preprocessing.to_json() == RECORDED


def test_a_loaded_model_saves_its_names_and_preprocessing_again(model, tmp_path):
    names = [f"digit {i}" for i in range(10)]
    model.save_pretrained(tmp_path / "a", class_names=names, preprocessing=PREPROCESSING)
    loaded = sknet.from_pretrained(tmp_path / "a")
    loaded.save_pretrained(tmp_path / "b")
    record = weights_io.read_record(tmp_path / "b")
    assert record.class_names == tuple(names) and record.preprocessing.to_json() == RECORDED

    # A new classifier keeps the preprocessing, not the old class names, and records its size:
    # in memory and in the file alike (no placeholder names: null).
    loaded.reset_classifier(3)
    assert loaded.record.num_classes == 3 and loaded.record.class_names is None
    loaded.save_pretrained(tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["num_classes"] == 3 and config["class_names"] is None
    assert config["preprocessing"] == RECORDED
    assert sknet.from_pretrained(tmp_path / "c").num_classes == 3


def test_pretrained_false_none_and_true():
    """timm and torchvision users write ``pretrained=False``; it once raised a TypeError."""
    torch.manual_seed(3)
    untrained = sknet.create_model("sknet_digits", pretrained=False).state_dict()
    torch.manual_seed(3)
    plain = sknet.create_model("sknet_digits", pretrained=None).state_dict()
    assert all(torch.equal(untrained[key], plain[key]) for key in plain)
    with pytest.raises(ValueError, match=r"pretrained=True\): no published weights") as error:
        sknet.create_model("sknet_digits", pretrained=True)
    assert "\n" not in str(error.value)


def test_a_config_of_a_newer_format_is_refused(model, tmp_path):
    sknet.save_pretrained(model, tmp_path / "w")
    config = tmp_path / "w" / "config.json"
    record = json.loads(config.read_text())
    config.write_text(json.dumps({**record, "format_version": 3}))
    with pytest.raises(ValueError, match=r"format version 3, newer than the 2 this sknet reads"):
        sknet.load_pretrained(tmp_path / "w")
    config.write_text(json.dumps({**record, "format_version": "1"}))
    with pytest.raises(ValueError, match=r"no valid format version \('1'\)"):
        sknet.load_pretrained(tmp_path / "w")


def test_one_record_from_create_model_to_the_file(model, tmp_path):
    """``create_model(pretrained=..., num_classes=N)`` and ``reset_classifier`` keep one record:
    on 411b0df the model said 5 classes and its loaded config 10 classes with 10 names."""
    names = [f"digit {i}" for i in range(10)]
    model.save_pretrained(tmp_path / "w", class_names=names, preprocessing=PREPROCESSING)
    tuned = sknet.create_model("sknet_digits", pretrained=tmp_path / "w", num_classes=5)
    assert tuned.record.num_classes == 5 and tuned.record.class_names is None
    assert tuned.record.preprocessing.to_json() == RECORDED  # the backbone's input is the same
    tuned.save_pretrained(tmp_path / "t")
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert (config["num_classes"], config["class_names"]) == (5, None)
    again = sknet.load_pretrained(tmp_path / "t")
    assert again.record == tuned.record


def test_version_1_placeholder_names_read_as_unknown(model, tmp_path):
    """Version 1 wrote ``"0", "1", ...`` for weights without names; they mean no names."""
    sknet.save_pretrained(model, tmp_path / "w")
    config_path = tmp_path / "w" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["class_names"] is None
    placeholders = [str(index) for index in range(10)]
    config_path.write_text(json.dumps({**config, "format_version": 1, "class_names": placeholders}))
    assert sknet.load_pretrained(tmp_path / "w").record.class_names is None
    config_path.write_text(json.dumps({**config, "class_names": placeholders}))
    assert sknet.load_pretrained(tmp_path / "w").record.class_names == tuple(placeholders)


def test_a_run_folder_loads_as_every_command_reads_it(tiny_run):
    """``load_pretrained`` takes what ``--checkpoint`` takes: a training run's folder (its
    best.safetensors) and its last.pt (411b0df refused the folder)."""
    best = sknet.load_pretrained(tiny_run).eval()
    last = sknet.load_pretrained(tiny_run / "last.pt").eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(best(x), last(x))  # one epoch: the best weights are the last
    assert best.record.class_names == last.record.class_names == tuple(map(str, range(10)))
    assert best.record.preprocessing == last.record.preprocessing

@pytest.mark.parametrize(("change", "expected"), [
    ({"num_classes": 10**10}, "num_classes must be in 0..1000000, got 10000000000"),
    ({"num_classes": -3}, "num_classes must be in 0..1000000, got -3"),  # once "unexpected 2"
    ({"kwargs": [1, 2]}, "kwargs must be a mapping of names, got [1, 2]"),
    ({"model": 5}, "model must be a model name, got 5"),
    ({"preprocessing": {**PREPROCESSING, "input_size": 1_000_000}},
     "input_size must be in 1..8192, got 1000000"),
])
def test_config_values_out_of_bounds_fail_in_one_line_before_building(
    model, tmp_path, capsys, change, expected
):
    sknet.save_pretrained(model, tmp_path / "w")
    path = tmp_path / "w" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    status = main(["eval", "--checkpoint", str(tmp_path / "w"), "--data", "digits"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == [f"sknet eval: error: {path}: {expected}"]


def test_a_full_disk_keeps_the_previous_weights_and_says_so(model, tmp_path, monkeypatch):
    weights = sknet.save_pretrained(model, tmp_path / "w")
    before = weights.read_bytes()

    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(UserError) as error:
        sknet.save_pretrained(model, tmp_path / "w")
    message = str(error.value)
    assert message.startswith("no space left on ") and "\n" not in message
    assert f"while writing {weights}; the previous model.safetensors is intact" in message
    assert weights.read_bytes() == before
    assert sorted(path.name for path in (tmp_path / "w").iterdir()) == [
        "README.md", "config.json", "model.safetensors"
    ]
    with pytest.raises(UserError, match=f"nothing was written to {tmp_path / 'new'}"):
        sknet.save_pretrained(model, tmp_path / "new.safetensors")


def _damaged(model, folder, damage):
    """Our weights folder of ``model`` with one kind of damage; the tensor it names."""
    from safetensors.torch import load_file, save_file

    weights = sknet.save_pretrained(model, folder, preprocessing=PREPROCESSING)
    state = load_file(str(weights))
    key = {"nan": "stages.0.0.conv1.conv.weight", "inf": "stem.bn.running_var"}.get(damage)
    if damage == "int32":
        state = {key: (value * 100).round().to(torch.int32) if value.is_floating_point()
                 else value for key, value in state.items()}
    else:
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float(damage)
    save_file(state, str(weights))
    return key


@pytest.mark.parametrize("damage", ["int32", "nan", "inf"])
def test_weights_of_another_dtype_or_not_finite_are_refused_everywhere(
    model, tmp_path, damage, capsys
):
    """On 2500fe3 int32 weights evaluated to 90% error without a word, NaN weights predicted
    ``nan%`` and ``train --pretrained`` from them said "training diverged ... lower --lr"."""
    from sknet.cli import main

    folder = tmp_path / "w"
    key = _damaged(model, folder, damage)
    expected = (r"tensor '[\w.]+' holds int32 values, not floating point" if damage == "int32"
                else f"tensor '{key}' holds NaN/Inf values; the weights are damaged")
    for load in (sknet.load_pretrained, lambda path: sknet.create_model("sknet_digits",
                                                                        pretrained=path)):
        with pytest.raises(ValueError, match=expected) as error:
            load(folder)
        assert str(error.value).startswith(str(folder / "model.safetensors")) \
            and "\n" not in str(error.value)
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (8, 8), 128).save(image)
    for command in (
        ["eval", "--checkpoint", folder, "--data", "digits"],
        ["predict", image, "--checkpoint", folder],
        ["train", "--pretrained", folder, "--data", "digits", "--out", tmp_path / "run",
         "--epochs", "1"],
    ):
        status = main([str(arg) for arg in command])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1, (command, err)
        assert err[0].startswith(f"sknet {command[0]}: error: ")
        assert "training diverged" not in err[0] and ": tensor '" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()


def test_half_precision_weights_load_with_a_note(model, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    weights = sknet.save_pretrained(model, tmp_path / "w")
    state = load_file(str(weights))
    save_file({key: value.half() if value.is_floating_point() else value
               for key, value in state.items()}, str(weights))
    loaded = sknet.load_pretrained(tmp_path / "w").eval()
    assert "float16 tensor(s), cast to the model's float32 on loading" in caplog.text
    assert loaded.stem.bn.num_batches_tracked.dtype == torch.int64  # the counter stays
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(loaded(x), model(x), atol=0.05)


class Executable:
    """An arbitrary object: ``torch.load(weights_only=True)`` must refuse to rebuild it."""

    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickled_object_is_refused_without_torchs_advice(model, tmp_path, capsys):
    """On 2500fe3 a refused pickle was called "truncated or corrupt?" and torch's advice to load
    it with ``weights_only=False`` (which runs its code) was repeated."""
    from sknet.cli import main

    path = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "args": Executable()}, path)
    with pytest.raises(ValueError, match=r"last\.pt: not a readable checkpoint: it holds Python "
                                         r"objects \(\w*\.?print\) besides tensors") as error:
        sknet.load_pretrained(path)
    message = str(error.value)
    assert "sknet never unpickles" in message and "torch.save(model.state_dict(), path)" in message
    assert "weights_only" not in message and "corrupt" not in message and "\n" not in message
    assert main(["eval", "--checkpoint", str(path), "--data", "digits"]) == 2
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert len(err) == 1 and "holds Python objects" in err[0] and "this ran" not in out

    path.write_bytes(b"hello")  # a damaged file: torch's own reason, without the advice either
    with pytest.raises(ValueError, match=r"not a readable checkpoint \(truncated or corrupt\?\)"):
        sknet.load_pretrained(path)
    with pytest.raises(ValueError) as error:
        sknet.load_pretrained(path)
    assert "weights_only" not in str(error.value)


def test_a_last_pt_with_nan_weights_is_refused_on_resume(tiny_run, tmp_path, capsys):
    import shutil

    from sknet.cli import main

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    state = torch.load(out / "last.pt", weights_only=True)
    state["model"]["fc.bias"][0] = float("nan")
    torch.save(state, out / "last.pt")
    for command in (["train", "--resume", out / "last.pt", "--epochs", "2"],
                    ["eval", "--checkpoint", out / "last.pt"]):
        assert main([str(arg) for arg in command]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "last.pt: tensor 'fc.bias' holds NaN/Inf values" in err[0]
