"""Fine-tuning (``sknet train --pretrained``): from timm's files and our runs onto other classes,
what is kept and re-initialised, freezing, exact resume, and every bad start."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from crash import CrashAfterCheckpoint
from imagefolder import make_image_folder
from safetensors.torch import save_file
from tiny import TINY

import sknet
from sknet.cli import main
from sknet.training import Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

FOLDER_RUN = {"input_size": 32, "batch_size": 6, "epochs": 2, "eval_sizes": [32]}
"""Two epochs of four steps on the generated 3-class folder (24 training images)."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images") / "data", per_class=8)


@pytest.fixture(scope="module", params=["skresnext50_32x4d", "skresnet18"])
def timm_file(request, tmp_path_factory):
    """A randomly initialised timm SK model saved as timm saves weights (no sknet config)."""
    torch.manual_seed(0)
    theirs = timm.create_model(request.param)
    path = tmp_path_factory.mktemp("timm") / f"{request.param}.safetensors"
    save_file(theirs.state_dict(), str(path))
    return path


def _state(out: Path) -> dict:
    return torch.load(out / "last.pt", weights_only=True)["model"]


def test_fine_tuning_a_timm_file_keeps_the_backbone_and_resumes_exactly(
    timm_file, folder, tmp_path, monkeypatch, capsys
):
    expected = sknet.from_timm(timm_file).state_dict()
    seen = []
    run_epoch = Trainer._train_epoch

    def first_epoch(self):
        if not seen:
            seen.append({k: v.clone() for k, v in self.model.state_dict().items()})
        run_epoch(self)

    monkeypatch.setattr(Trainer, "_train_epoch", first_epoch)
    out = tmp_path / "tuned"
    status = main(["train", "--data", str(folder), "--pretrained", str(timm_file),
                   "--out", str(out), "--input-size", "32", "--batch-size", "6", "--epochs", "2",
                   "--eval-sizes", "32", "--save-every", "2"])
    assert status == 0
    log = capsys.readouterr().err
    assert "re-initialised the classifier (1000 -> 3 classes: another class count)" in log
    (before,) = seen
    backbone = [key for key in expected if not key.startswith("fc.")]
    assert backbone and all(torch.equal(before[key], expected[key]) for key in backbone)
    assert before["fc.weight"].shape == (3, expected["fc.weight"].shape[1])
    record = json.loads((out / "best.json").read_text())
    name = {"skresnext50_32x4d": "sknet50", "skresnet18": "skresnet18"}[timm_file.stem]
    assert record["model"] == name and record["num_classes"] == 3
    # timm's preprocessing (ImageNet mean/std on [0, 1], bicubic) is the run's
    assert record["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert record["preprocessing"]["interpolation"] == "bicubic"

    # Interrupted after its third checkpoint and resumed, the run ends with the same weights.
    monkeypatch.setattr(Trainer, "_train_epoch", run_epoch)
    crash = CrashAfterCheckpoint(monkeypatch, 3)
    again = tmp_path / "again"
    with pytest.raises(KeyboardInterrupt):
        train(data=str(folder), pretrained=str(timm_file), out=str(again), save_every=2,
              **FOLDER_RUN)
    crash.stop()
    train(resume=again / "last.pt")
    ours, theirs = _state(again), _state(out)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.fixture(scope="module")
def digits_source(tmp_path_factory):
    """A tiny network trained for one epoch on digits 0-4."""
    out = tmp_path_factory.mktemp("source") / "run"
    torch.set_num_threads(1)
    train(data="digits:0-4", out=str(out), model_kwargs=TINY, input_size=8, epochs=1)
    return out


def test_fine_tuning_our_run_freezes_and_keeps_what_fits(digits_source, tmp_path, capsys):
    source = sknet.load_pretrained(digits_source / "best.safetensors").state_dict()
    out = tmp_path / "frozen"
    summary = train(data="digits:5-9:6", pretrained=str(digits_source), out=str(out),
                    batch_size=10, epochs=2, freeze="conv3", backbone_lr_scale=0.5)
    log = capsys.readouterr().err
    assert "re-initialised the classifier (5 -> 5 classes: other class names)" in log
    assert "froze conv1-conv3" in log and "0.5 x the classifier's lr" in log
    tuned = _state(out)
    frozen = [k for k in source if k.startswith(("stem.", "stages.0.", "stages.1."))]
    trained = [k for k in source if k.startswith("stages.2.") and k.endswith("weight")]
    assert frozen and all(torch.equal(tuned[k], source[k]) for k in frozen)  # BN stats too
    assert trained and not all(torch.equal(tuned[k], source[k]) for k in trained)
    assert summary["epochs"] == 2 and summary["finished"]

    # The same classes keep the classifier.
    same = train(data="digits:0-4:6", pretrained=str(digits_source / "best.safetensors"),
                 out=str(tmp_path / "same"), batch_size=10, epochs=1)
    assert "kept all" in capsys.readouterr().err and same["finished"]
    settings = yaml.safe_load((tmp_path / "same" / "config.yaml").read_text())
    assert settings["pretrained"].endswith("best.safetensors") and settings["epochs"] == 1


def test_a_frozen_run_resumes_exactly_and_keeps_its_groups(digits_source, tmp_path, monkeypatch,
                                                            capsys):
    settings = {"data": "digits:5-9:12", "pretrained": str(digits_source), "batch_size": 10,
                "epochs": 2, "freeze": "conv2", "backbone_lr_scale": 0.5, "save_every": 4}
    whole = tmp_path / "whole"
    train(out=str(whole), **settings)
    crash = CrashAfterCheckpoint(monkeypatch, 2)
    again = tmp_path / "again"
    with pytest.raises(KeyboardInterrupt):
        train(out=str(again), **settings)
    crash.stop()
    status, line = _cli(capsys, "train", "--resume", again / "last.pt", "--freeze", "conv3")
    assert status == 2 and "trained with --freeze conv2, not conv3" in line
    status, line = _cli(capsys, "train", "--resume", again / "last.pt", "--backbone-lr-scale", 1)
    assert status == 2 and "--backbone-lr-scale 0.5, not 1.0" in line
    train(resume=again / "last.pt")
    ours, theirs = _state(again), _state(whole)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_two_process_fine_tuning_with_a_frozen_stem(digits_source, tmp_path):
    """DDP: every process starts from the same weights and the same new classifier; frozen
    parameters take no part in the gradient all-reduce."""
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "sknet", "train",
               "--data", "digits:5-9:12", "--pretrained", str(digits_source), "--freeze",
               "conv2", "--batch-size", "10", "--epochs", "2", "--device", "cpu",
               "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("froze conv1-conv2") == 1  # rank 0 logs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["finished"]
    source = sknet.load_pretrained(digits_source / "best.safetensors").state_dict()
    tuned = _state(out)
    assert all(torch.equal(tuned[k], source[k]) for k in source if k.startswith("stem."))


def test_fine_tuning_epochs_default_to_enough_steps(digits_source, tmp_path, monkeypatch):
    chosen = []
    monkeypatch.setattr(Trainer, "fit", lambda self: chosen.append(self.config) or {})
    train(data="digits:5-9:6", pretrained=str(digits_source), out=str(tmp_path / "a"),
          batch_size=10)
    train(data="digits:0-4", pretrained=str(digits_source), out=str(tmp_path / "b"))
    # 30 images at batch 10: 3 steps an epoch, 100 epochs for 300 steps; 721 images at 64:
    # 11 steps, 28 epochs; 30% of the recipe's 15 would be 5.
    assert [config.epochs for config in chosen] == [100, 28]
    assert chosen[0].lr == pytest.approx(0.1 * 10 / 64)  # the recipe's rate, batch-scaled


def _cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


def test_bad_starts_fail_in_one_line_and_touch_no_run(digits_source, tmp_path, capsys):
    run = tmp_path / "existing"
    shutil.copytree(digits_source, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    tune = ("train", "--data", "digits:5-9:6", "--batch-size", "10")

    status, line = _cli(capsys, *tune, "--pretrained", digits_source, "--model", "sknet26",
                        "--out", tmp_path / "a")
    assert status == 2 and "holds weights of model 'sknet_digits', not --model 'sknet26'" in line
    status, line = _cli(capsys, *tune, "--pretrained", digits_source, "--freeze", "conv9",
                        "--out", tmp_path / "b")
    assert status == 2 and "--freeze conv9: no such stage" in line
    assert "conv1, conv2, conv3, conv4" in line
    status, line = _cli(capsys, *tune, "--pretrained", tmp_path / "empty-folder",
                        "--out", tmp_path / "c")
    assert status == 2 and line.startswith("sknet train: error: --pretrained")
    (tmp_path / "nothing").mkdir()
    status, line = _cli(
        capsys, *tune, "--pretrained", tmp_path / "nothing", "--out", tmp_path / "d"
    )
    assert status == 2 and "no weights there" in line
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((digits_source / "best.safetensors").read_bytes()[:500])
    (tmp_path / "broken.json").write_bytes((digits_source / "best.json").read_bytes())
    status, line = _cli(capsys, *tune, "--pretrained", broken, "--out", tmp_path / "e")
    assert status == 2 and "not a readable safetensors file" in line
    status, line = _cli(capsys, *tune, "--pretrained", digits_source, "--model-kwargs",
                        "{attention: false}", "--out", tmp_path / "f")
    assert status == 2 and "drop --model-kwargs" in line
    # a failed start into an existing run's folder leaves it as it was
    status, line = _cli(capsys, *tune, "--pretrained", digits_source, "--freeze", "conv9",
                        "--out", run)
    assert status == 2
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_weights_without_class_names_fit_by_count_everywhere(folder, tmp_path, capsys):
    """One rule for weights that record no class names (``null``): fine-tuning keeps their
    classifier for a folder of as many classes, as ``sknet eval`` accepts them for it. On
    411b0df they were saved with placeholder names ``0, 1, 2``: eval took them, fine-tuning
    re-initialised the head for "other class names"."""
    model = sknet.create_model("sknet_digits", num_classes=3, in_chans=3, **TINY)
    model.save_pretrained(tmp_path / "w")
    assert json.loads((tmp_path / "w" / "config.json").read_text())["class_names"] is None
    report = sknet.evaluate(tmp_path / "w", data=str(folder), sizes=[16])
    assert report["results"]["16"]["images"] == 9
    train(data=str(folder), pretrained=str(tmp_path / "w"), out=str(tmp_path / "t"),
          input_size=16, batch_size=6, epochs=1, eval_sizes=[16])
    log = capsys.readouterr().err
    assert "the weights record no class names: the classifier is kept if the count fits" in log
    assert "kept all" in log and "re-initialised" not in log
    record = json.loads((tmp_path / "t" / "best.json").read_text())
    assert record["class_names"] == ["class_0", "class_1", "class_2"]
