"""Training and evaluation: the recipe, checkpoints, exact resume, DDP, and every bad input.

Runs use a 21k-parameter variant of sknet_digits at 8x8 on one thread, so a digits epoch takes
well under a second.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from crash import CrashAfterCheckpoint
from imagefolder import make_image_folder
from tiny import TINY

import sknet
import sknet.data as sknet_data
import sknet.training.recipe as recipes
from sknet.cli import main
from sknet.evaluation import evaluate
from sknet.models import get_entry
from sknet.preprocessing import Preprocessing
from sknet.training import RECIPES, TrainConfig, recipe_for, resolve, train
from sknet.training.config import layer, lr_at
from sknet.training.recipe import milestone_epochs

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = "{cardinality: 2, base_width: 4, base_out: 16, stem_channels: 8, " \
            "branches: [[3, 1, 2], [3, 2, 2]], min_dim: 4}"
RUN = {"model_kwargs": TINY, "input_size": 8, "epochs": 2, "save_every": 5}
"""Two epochs of 22 steps, a checkpoint every 5 steps: 4 mid-epoch checkpoints per epoch."""


pytestmark = pytest.mark.usefixtures("one_thread")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _weights(out):
    return torch.load(Path(out) / "last.pt", weights_only=True)["model"]


def _same(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("digits") / "run"
    summary = train(out=str(out), **RUN)
    return out, summary


# -- the recipe -----------------------------------------------------------------------------


def test_recipe_defaults_are_the_papers():
    imagenet = RECIPES["imagenet"]
    assert (imagenet.epochs, imagenet.batch_size, imagenet.lr) == (100, 256, 0.1)
    assert imagenet.momentum == 0.9
    assert (imagenet.weight_decay, imagenet.label_smoothing) == (1e-4, 0.1)
    assert milestone_epochs(100, imagenet.lr_milestones) == [30, 60, 90]
    assert (imagenet.input_size, imagenet.eval_sizes, imagenet.min_scale) == (224, (224, 320), 0.08)
    cifar = RECIPES["cifar"]
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.weight_decay) == (300, 128, 0.1, 5e-4)
    assert milestone_epochs(300, cifar.lr_milestones) == [150, 225]
    assert milestone_epochs(20, imagenet.lr_milestones) == [6, 12, 18]

    config = resolve(TrainConfig(batch_size=512), "imagenet", "sknet50")
    assert config.lr == pytest.approx(0.2)  # linear scaling with the batch
    lrs = [lr_at(epoch, config) for epoch in (0, 29, 30, 60, 99)]
    assert lrs == pytest.approx([0.2, 0.2, 0.02, 0.002, 0.0002])
    assert resolve(TrainConfig(input_size=160), "imagenet", "sknet50").eval_sizes == [160, 229]
    assert resolve(TrainConfig(lr=0.5, batch_size=512), "imagenet", "sknet50").lr == 0.5


def test_lightweight_models_get_the_lighter_weight_decay(monkeypatch):
    assert not recipes.is_lightweight("sknet50")
    assert recipe_for("imagenet", "sknet50").weight_decay == 1e-4
    entry = get_entry("sknet50")

    class Lightweight:
        lightweight = True
        config = entry.config

    monkeypatch.setattr(recipes, "get_entry", lambda name: Lightweight())
    recipe = recipe_for("imagenet", "any")
    assert (recipe.weight_decay, recipe.min_scale) == (4e-5, 0.25)


def test_yaml_settings_are_defaults_that_options_override(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("epochs: 3\nbatch-size: 32\nmodel_kwargs: {attention: false}\n")
    config = layer({"epochs": 2}, path)
    assert (config.epochs, config.batch_size) == (2, 32)
    assert config.model_kwargs == {"attention": False}
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown setting.*learning_rate"):
        layer({}, path)
    path.write_text("epochs: [3\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        layer({}, path)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        resolve(TrainConfig(epochs=0), "digits", "sknet_digits")


# -- a run and its files ------------------------------------------------------------------


def test_a_run_writes_everything_and_eval_reproduces_it(digits_run):
    out, summary = digits_run
    names = {path.name for path in out.iterdir()}
    assert {"config.yaml", "last.pt", "best.safetensors", "best.json", "metrics.csv",
            "summary.json"} <= names
    assert not [name for name in names if name.endswith(".tmp")]
    state = torch.load(out / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (2, 0) and "model" in state
    assert {"optimizer", "scaler", "scheduler", "rng", "config"} <= set(state)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "val_top1_err", "val_top5_err",
                            "img_per_s", "seconds"}
    saved = json.loads((out / "summary.json").read_text())
    assert saved["top1_err"] == summary["top1_err"] and saved["finished"]
    assert saved["top1_err"] == min(float(row["val_top1_err"]) for row in rows)
    assert saved["command"].startswith("sknet.train(") and saved["top5_err"] <= saved["top1_err"]
    assert json.loads((out / "best.json").read_text())["dataset"] == "digits"

    report = evaluate(out, batch_size=64)
    assert report["results"]["8"]["top1_err"] == pytest.approx(summary["top1_err"], abs=1e-3)
    assert report["results"]["8"]["top5_err"] == pytest.approx(summary["top5_err"], abs=1e-3)
    assert report["results"]["8"]["images"] == 360


def test_resume_after_crashes_gives_the_same_weights(digits_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    crash = CrashAfterCheckpoint(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(out=str(out), **RUN)
    assert crash.calls == [(0, 5), (0, 10), (0, 15)]  # killed mid-epoch
    crash.calls.clear()
    with pytest.raises(KeyboardInterrupt):
        train(resume=out / "last.pt")
    assert crash.calls == [(0, 20), (1, 0), (1, 5)]  # killed again, after an epoch end
    crash.stop()
    summary = train(resume=out / "last.pt")
    assert _same(_weights(out), _weights(digits_run[0]))
    assert summary["top1_err"] == digits_run[1]["top1_err"]
    ours = list(csv.DictReader((out / "metrics.csv").open()))
    theirs = list(csv.DictReader((digits_run[0] / "metrics.csv").open()))
    timing = ("img_per_s", "seconds")
    assert [{k: v for k, v in row.items() if k not in timing} for row in ours] == [
        {k: v for k, v in row.items() if k not in timing} for row in theirs
    ]


def test_kill_9_mid_epoch_then_resume_gives_the_same_weights(digits_run, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sknet", "train", "--out", str(out), "--epochs", "2",
               "--input-size", "8", "--save-every", "3", "--model-kwargs", TINY_YAML]
    process = subprocess.Popen(command, env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] < 2, "the run finished before it could be killed"
    assert not (out / "summary.json").exists() or not json.loads(
        (out / "summary.json").read_text())["finished"]
    train(resume=out / "last.pt", save_every=5)  # the save interval does not change the result
    assert _same(_weights(out), _weights(digits_run[0]))


def test_two_process_gloo_ddp_on_digits(tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "sknet", "train",
               "--out", str(out), "--epochs", "1", "--input-size", "8", "--device", "cpu",
               "--model-kwargs", TINY_YAML]
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("epoch   1/1") == 1  # one log line: rank 0 only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["finished"]
    # Validation was split across the processes and summed: the saved weights give the same
    # error on one process.
    report = evaluate(out, batch_size=32)["results"]["8"]
    assert report["top1_err"] == pytest.approx(summary["top1_err"], abs=1e-3)


def test_channels_last_and_bf16_autocast_train_on_cpu(tmp_path):
    summary = train(out=str(tmp_path / "run"), model_kwargs=TINY, input_size=8, epochs=1,
                    channels_last=True, amp=True)
    assert 0 <= summary["top1_err"] < 100


# -- bad input: one line, non-zero exit, the last good checkpoint untouched -----------------


def _cli(capsys, *argv):
    status = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


def _copy(digits_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(digits_run[0], out)
    return out, {name: (out / name).read_bytes() for name in ("last.pt", "best.safetensors")}


def test_nan_loss_stops_without_touching_the_checkpoint(digits_run, tmp_path, capsys):
    out, before = _copy(digits_run, tmp_path)
    status, line = _cli(capsys, "train", "--resume", str(out / "last.pt"), "--epochs", "3",
                        "--lr", "1e30")
    assert status == 2
    assert line.startswith("sknet train: error: training diverged: the training loss became")
    assert "still holds the last good state" in line
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("damage", ["truncated", "empty", "foreign"])
def test_damaged_checkpoints_fail_in_one_line(digits_run, tmp_path, capsys, damage):
    out, before = _copy(digits_run, tmp_path)
    data = before["last.pt"]
    damaged = {"truncated": data[: len(data) // 2], "empty": b"", "foreign": b"hello"}[damage]
    (out / "last.pt").write_bytes(damaged)
    status, line = _cli(capsys, "train", "--resume", str(out / "last.pt"))
    assert status == 2
    assert line.startswith("sknet train: error: --resume") and "not a readable checkpoint" in line
    assert (out / "best.safetensors").read_bytes() == before["best.safetensors"]


def test_a_checkpoint_of_another_model_or_class_count(digits_run, tmp_path, capsys):
    out, before = _copy(digits_run, tmp_path)
    status, line = _cli(capsys, "train", "--resume", str(out / "last.pt"), "--model", "sknet26")
    assert status == 2 and "checkpoint is of model 'sknet_digits'" in line
    folder = make_image_folder(tmp_path / "images")
    status, line = _cli(capsys, "train", "--resume", str(out / "last.pt"), "--data", str(folder))
    assert status == 2 and "the checkpoint was trained on 10 classes" in line and "has 3 (" in line
    status, line = _cli(capsys, "eval", str(out), "--data", str(folder))
    assert status == 2 and "classifies 10 classes but --data" in line
    assert {name: (out / name).read_bytes() for name in before} == before


def test_a_used_out_folder_and_missing_paths(digits_run, tmp_path, capsys):
    status, line = _cli(capsys, "train", "--out", str(digits_run[0]))
    assert status == 2 and "already holds a run" in line and "--resume" in line
    status, line = _cli(capsys, "train", "--data", str(tmp_path / "nowhere"))
    assert status == 2 and line.startswith("sknet train: error: --data")
    assert "no such folder" in line
    status, line = _cli(capsys, "train", "--resume", str(tmp_path / "last.pt"))
    assert status == 2 and "no such checkpoint" in line
    status, line = _cli(capsys, "train", "--config", str(tmp_path / "absent.yaml"))
    assert status == 2 and "--config" in line and "no such file" in line
    status, line = _cli(capsys, "eval", str(tmp_path))
    assert status == 2 and "no weights there" in line


def test_a_checkpoint_of_a_newer_format_is_refused(digits_run, tmp_path, capsys):
    out, before = _copy(digits_run, tmp_path)
    state = torch.load(out / "last.pt", weights_only=True)
    torch.save({**state, "version": 7}, out / "last.pt")
    status, line = _cli(capsys, "train", "--resume", str(out / "last.pt"))
    assert status == 2 and "format version 7, newer than the 2 this sknet reads" in line
    status, line = _cli(capsys, "eval", "--checkpoint", str(out / "last.pt"))
    assert status == 2 and "format version 7" in line
    assert (out / "best.safetensors").read_bytes() == before["best.safetensors"]


def test_resume_reads_the_saved_schedule_and_says_when_settings_change_it(
    digits_run, tmp_path, capsys
):
    out, _ = _copy(digits_run, tmp_path)
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["scheduler"] == {"milestones": [1, 1, 2], "gamma": 0.1, "lr": pytest.approx(1e-4)}
    train(resume=out / "last.pt", epochs=3)
    err = capsys.readouterr().err
    assert "resuming under a changed learning-rate schedule: milestones [1, 1, 2] -> [1, 2, 3]" \
        in err
    train(resume=out / "last.pt")  # finished, same schedule: nothing to say, nothing to do
    assert "changed learning-rate schedule" not in capsys.readouterr().err


def test_eval_takes_the_weights_as_every_command_does(digits_run, capsys):
    out = digits_run[0]
    assert main(["eval", "--checkpoint", str(out)]) == 0
    new = capsys.readouterr()
    assert main(["eval", str(out)]) == 0  # the old spelling still works, with a note
    old = capsys.readouterr()
    assert old.out == new.out and "top-1 err" in new.out
    assert "deprecated" in old.err and "--checkpoint" in old.err and "deprecated" not in new.err
    status, line = _cli(capsys, "eval", str(out), "--checkpoint", str(out))
    assert status == 2 and "give the weights once" in line
    status, line = _cli(capsys, "eval")
    assert status == 2 and "--checkpoint PATH" in line


def test_truncated_best_weights_fail_eval_in_one_line(digits_run, tmp_path, capsys):
    out, before = _copy(digits_run, tmp_path)
    (out / "best.safetensors").write_bytes(before["best.safetensors"][:1000])
    status, line = _cli(capsys, "eval", str(out))
    assert status == 2 and "not a readable safetensors file" in line


def test_folder_dataset_skips_bad_files_or_rejects_them_with_strict(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", bad=True)
    out = tmp_path / "run"
    status = main(["train", "--data", str(folder), "--out", str(out), "--model", "sknet_digits",
                   "--model-kwargs", TINY_YAML, "--input-size", "16", "--batch-size", "6",
                   "--epochs", "1", "--eval-sizes", "16,20"])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    skipped = (out / "skipped_files.txt").read_text().split()
    assert sorted(Path(path).name for path in skipped) == [
        "empty.jpg", "garbage.png", "notes.txt", "truncated.jpg"
    ]
    assert summary["skipped_files"] == 4 and set(summary["eval"]) == {"16", "20"}
    assert json.loads((out / "best.json").read_text())["kwargs"]["in_chans"] == 3
    status, line = _cli(capsys, "train", "--data", str(folder), "--out", str(tmp_path / "strict"),
                        "--strict", "--model", "sknet_digits")
    assert status == 2 and line.startswith("sknet train: error: --strict: 3 bad file(s)")
    assert not (tmp_path / "strict").exists()


def test_eval_of_imported_weights_on_a_folder_checks_names_and_follows_their_preprocessing(
    tmp_path, capsys, monkeypatch
):
    """Weights saved without class names (``null``, e.g. a bare timm file) evaluate on any
    folder of as many classes; real names must match the folder's. Evaluation feeds the images
    as the weights' config says (test_data checks that val_set follows what it is given)."""
    folder = make_image_folder(tmp_path / "images")
    model = sknet.create_model("sknet_digits", num_classes=3, **{**TINY, "in_chans": 3}).eval()
    odd = {"input_size": 16, "resize": 20, "interpolation": "bicubic",
           "mean": [0.9, 0.1, 0.5], "std": [0.05, 0.5, 0.2]}
    unnamed = sknet.save_pretrained(model, tmp_path / "unnamed", preprocessing=odd)
    given = []
    folder_val_set = sknet_data.FolderSource.val_set

    def spy(self, size, preprocessing):
        given.append((size, preprocessing))
        return folder_val_set(self, size, preprocessing)

    monkeypatch.setattr(sknet_data.FolderSource, "val_set", spy)
    report = evaluate(unnamed.parent, str(folder), [16, 24], batch_size=4, workers=0)
    recorded = Preprocessing.from_json(odd, "odd")
    assert given == [(16, recorded), (24, recorded.at(24))]
    assert report["results"]["24"]["images"] == 9

    sknet.save_pretrained(model, tmp_path / "named", class_names=["x", "y", "z"], preprocessing=odd)
    status, line = _cli(capsys, "eval", str(tmp_path / "named"), "--data", str(folder))
    assert status == 2 and "class names (x, y, z, ...) differ" in line


def test_a_relative_data_folder_is_recorded_absolute(tmp_path, monkeypatch, capsys):
    """A run on ``--data imgs`` evaluates from any folder without ``--data`` (411b0df stored
    ``imgs`` and failed elsewhere with "--data imgs: no such folder")."""
    make_image_folder(tmp_path / "work" / "imgs", per_class=4, val_per_class=2)
    monkeypatch.chdir(tmp_path / "work")
    status = main(["train", "--data", "imgs", "--out", "run", "--model", "sknet_digits",
                   "--model-kwargs", TINY_YAML, "--input-size", "16", "--batch-size", "6",
                   "--epochs", "1", "--eval-sizes", "16"])
    assert status == 0
    recorded = json.loads((tmp_path / "work" / "run" / "best.json").read_text())["dataset"]
    assert recorded == str((tmp_path / "work" / "imgs").resolve())
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "work" / "run")]) == 0
    assert "top-1 err" in capsys.readouterr().out

# -- settings bounded and typed, sizes checked up front, file-system failures in one line ----


def _one_line(capsys, *argv):
    """Exit status and the one line on stderr of a command that fails before it starts work
    (argparse's refusals included)."""
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return status, err[0]


def _settings(tmp_path, text):
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def _alias_bomb(levels):
    """Billion laughs: each level ten aliases of the one before (10**levels strings)."""
    lines = ["preprocessing:", "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text", [
    _alias_bomb(4),  # 9 levels once took 2.8 GB and never finished
    "model_kwargs: &loop {inner: *loop}\n",  # once a 3,000-line RecursionError
    "model_kwargs: &tiny {attention: false}\npreprocessing: {<<: *tiny}\n",
])
def test_config_files_with_yaml_aliases_are_refused(tmp_path, capsys, text):
    path = _settings(tmp_path, text)
    status, line = _one_line(capsys, "train", "--config", path, "--out", tmp_path / "run")
    assert status == 2 and line.startswith(f"sknet train: error: --config {path}: line ")
    assert "anchors and aliases (&name, *name, <<) are not accepted" in line
    status, line = _one_line(capsys, "train", "--model-kwargs", "&a [*a]")
    assert status == 2 and "argument --model-kwargs" in line and "aliases" in line


def test_config_files_are_bounded_and_read_numbers_as_people_write_them(tmp_path, capsys):
    path = _settings(tmp_path, "epochs: 1\n" + "#" * 1_000_000 + "\n")
    status, line = _one_line(capsys, "train", "--config", path)
    assert status == 2 and "larger than 1,000,000 bytes" in line
    path = _settings(tmp_path, "model_kwargs: {x: " + "[" * 100 + "]" * 100 + "}\n")
    status, line = _one_line(capsys, "train", "--config", path)
    assert status == 2 and "nested deeper than 32 levels" in line
    path = _settings(tmp_path, "lr: 1e-4\nweight_decay: 5E-5\nmomentum: 1\nepochs: 3\n")
    config = layer({}, path)  # YAML 1.1 would read 1e-4 as text
    assert (config.lr, config.weight_decay, config.momentum, config.epochs) == (1e-4, 5e-5, 1.0, 3)
    assert isinstance(config.momentum, float)


@pytest.mark.parametrize(("text", "expected"), [
    ("epochs: ten", "epochs must be an integer or null, got 'ten' (str)"),
    ('lr: "0.1"', "lr must be a finite number or null, got '0.1' (str)"),
    ("batch_size: [4, 8]", "batch_size must be an integer or null, got [4, 8] (list)"),
    ("model_kwargs: 5", "model_kwargs must be a mapping of names to values, got 5 (int)"),
    ("seed: abc", "seed must be an integer, got 'abc' (str)"),
    ("data: 12345", "data must be text, got 12345 (int)"),
    ("epochs: 1.5", "epochs must be an integer or null, got 1.5 (float)"),  # ran "epoch 2/1.5"
    ("save_every: true", "save_every must be an integer, got True (bool)"),
    ("eval_sizes: [224, 3.5]", "eval_sizes must be a list of integers or null, got [224, 3.5]"),
    ("lr: .nan", "lr must be a finite number or null, got nan (float)"),
    ("amp: yes please", "amp must be true or false, got 'yes please' (str)"),
])
def test_config_values_must_have_their_settings_types(tmp_path, capsys, text, expected):
    path = _settings(tmp_path, text + "\n")
    status, line = _one_line(capsys, "train", "--config", path, "--out", tmp_path / "run")
    assert status == 2 and line.startswith(f"sknet train: error: --config {path}: {expected}")


def test_python_keywords_are_checked_like_config_values(tmp_path):
    with pytest.raises(ValueError, match=r"^sknet\.train: epochs must be an integer or null"):
        train(out=str(tmp_path / "run"), epochs=2.0)
    with pytest.raises(ValueError, match=r"save_every must be an integer, got False \(bool\)"):
        train(out=str(tmp_path / "run"), save_every=False)
    with pytest.raises(ValueError, match=r"model_kwargs must be a mapping of names to values"):
        train(out=str(tmp_path / "run"), model_kwargs=[("attention", False)])
    assert not (tmp_path / "run").exists()
    config = layer({"lr_milestones": (0.5, 1), "out": tmp_path / "run"})
    assert (config.lr_milestones, config.out) == ([0.5, 1.0], str(tmp_path / "run"))


def test_model_kwargs_of_the_wrong_shape_fail_in_one_line(tmp_path, capsys):
    status, line = _one_line(capsys, "train", "--out", tmp_path / "run", "--epochs", "1",
                             "--model-kwargs", "{branches: 5}")
    assert status == 2 and line.startswith("sknet train: error: model 'sknet_digits' with")
    assert "branches must be a list holding one (kernel, dilation, groups) list per branch" in line


def test_sizes_are_bounded_before_anything_runs(digits_run, tmp_path, capsys):
    run = tmp_path / "run"
    for argv, flag in [
        (["train", "--out", run, "--input-size", "100000"], "--input-size"),
        (["train", "--out", run, "--eval-sizes", "16,0"], "--eval-sizes"),  # once after training
        (["eval", "--checkpoint", digits_run[0], "--sizes", "0"], "--sizes"),
    ]:
        status, line = _one_line(capsys, *argv)
        assert status == 2 and f"argument {flag}: " in line
        assert "must be in 8..8192 pixels" in line and line.endswith("--help")
    path = _settings(tmp_path, "input_size: 100000\n")
    status, line = _one_line(capsys, "train", "--config", path, "--out", tmp_path / "run")
    assert status == 2 and "input size must be in 8..8192 pixels, got 100000" in line
    with pytest.raises(ValueError, match=r"eval sizes must be in 8\.\.8192 pixels, got \[8, 4\]"):
        resolve(TrainConfig(input_size=8, eval_sizes=[8, 4]), "digits", "sknet_digits")
    with pytest.raises(ValueError, match=r"--sizes must be in 8\.\.8192 pixels, got 0"):
        evaluate(digits_run[0], sizes=[0])
    assert not (tmp_path / "run").exists()


def test_an_out_that_cannot_be_written_is_refused_up_front(digits_run, tmp_path, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    status, line = _one_line(capsys, "train", "--out", blocker)
    assert status == 2 and line == (
        f"sknet train: error: --out {blocker}: is a file, not a folder; name a folder (it is "
        "created)"
    )
    status, line = _one_line(capsys, "train", "--out", blocker / "run")
    assert status == 2 and f"{blocker} is a file, not a folder" in line
    status, line = _one_line(capsys, "eval", "--checkpoint", digits_run[0], "--json", tmp_path)
    assert status == 2 and line == (
        f"sknet eval: error: --json {tmp_path}: is a folder; name the file to write in it"
    )
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_up_front(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        status, line = _one_line(capsys, "train", "--out", locked / "run")
    finally:
        locked.chmod(0o755)
    assert status == 2 and f"{locked} is not writable" in line


def test_a_full_disk_while_checkpointing_keeps_the_checkpoint_and_says_so(
    digits_run, tmp_path, capsys, monkeypatch
):
    out, before = _copy(digits_run, tmp_path)

    def full_disk(state, path):
        with open(path, "wb") as partial:
            partial.write(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 44 vs 41")

    monkeypatch.setattr(torch, "save", full_disk)
    status, line = _cli(capsys, "train", "--resume", str(out / "last.pt"), "--epochs", "3")
    assert status == 2 and line.startswith(f"sknet train: error: writing {out / 'last.pt'} stopped")
    assert "most likely no space left on " in line and "the previous last.pt is intact" in line
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.glob(".*.tmp"))


def _folder_run(folder, out, *more):
    return ["train", "--data", str(folder), "--out", str(out), "--model", "sknet_digits",
            "--model-kwargs", TINY_YAML, "--input-size", "8", "--epochs", "1", *more]


def test_file_names_of_any_encoding_are_listed_and_the_run_resumes(tmp_path, capsys):
    """On 2500fe3 a skipped file named ``bad\\xff.png`` (not UTF-8) crashed every epoch's end
    while writing skipped_files.txt ("surrogates not allowed"): the run never finished."""
    folder = make_image_folder(tmp_path / "images", per_class=5, val_per_class=2)
    for name in (b"bad\xff.png", b"notes\xfe.txt"):
        with open(os.path.join(os.fsencode(folder / "train" / "class_0"), name), "wb") as file:
            file.write(b"\x89PNG garbage" * 10)
    out = tmp_path / "run"
    assert main(_folder_run(folder, out, "--batch-size", "8")) == 0  # 16 files: every one met
    err = capsys.readouterr().err
    listed = (out / "skipped_files.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(Path(line).name for line in listed) == ["bad\\xff.png", "notes\\xfe.txt"]
    assert f"skipped {folder}/train/class_0/bad\\xff.png: unreadable" in err
    assert "e.g. " + str(folder / "train" / "class_0") + "/notes\\xfe.txt (not an image file)" \
        in err
    saved = torch.load(out / "last.pt", weights_only=True)["skipped"]
    assert sorted(Path(path).name for path in saved) == ["bad\udcff.png", "notes\udcfe.txt"]
    assert json.loads((out / "summary.json").read_text())["skipped_files"] == 2
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["finished"]


def test_a_folder_where_nothing_reads_fails_in_one_line_with_loader_workers(tmp_path, capsys):
    """On 2500fe3 the error raised in a loader worker reached the user as a 14-line traceback."""
    folder = make_image_folder(tmp_path / "images", per_class=3, val_per_class=1)
    for path in (folder / "train").rglob("*.*"):
        path.write_bytes(b"\x89PNG garbage" * 10)
    out = tmp_path / "run"
    status = main(_folder_run(folder, out, "--batch-size", "6", "--workers", "2"))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and not [line for line in err if "Traceback" in line or "worker" in line]
    assert err[-1] == (f"sknet train: error: --data {folder}: no training image can be read "
                       "(every file tried was skipped, as listed above); replace the damaged "
                       "files")
    assert sum(line.startswith("skipped ") for line in err) == 9
    assert not (out / "last.pt").exists()


def test_eval_says_what_the_folder_scan_left_out(tmp_path, caplog):
    folder = make_image_folder(tmp_path / "images", per_class=2, val_per_class=2)
    (folder / "val" / "class_0" / "self").symlink_to(".")
    model = sknet.create_model("sknet_digits", num_classes=3, **{**TINY, "in_chans": 3})
    weights = sknet.save_pretrained(model, tmp_path / "w", preprocessing={
        "input_size": 8, "resize": 8, "mean": [0.5] * 3, "std": [0.5] * 3})
    report = evaluate(weights.parent, str(folder), batch_size=4, workers=0)
    assert report["results"]["8"]["images"] == 6
    assert f"--data {folder}: left out 1 path(s) that are not image files, e.g. " \
        f"{folder}/val/class_0/self (symlink to a folder, not followed)" in caplog.text


def test_default_evaluation_sizes_follow_the_training_size():
    """The recipe's 224/320 only for 224 training (411b0df evaluated a 96 run at [96, 320])."""
    assert resolve(TrainConfig(), "imagenet", "sknet50").eval_sizes == [224, 320]
    assert resolve(TrainConfig(input_size=96), "imagenet", "sknet50").eval_sizes == [96, 137]
    assert resolve(TrainConfig(), "digits", "sknet_digits").eval_sizes == [16]


def test_the_log_says_the_schedule_threads_and_progress_and_no_top5_for_few_classes(
    tmp_path, capsys, monkeypatch
):
    """The first line gives the lr by epoch (and says when a short run merges the schedule's
    steps), a log that is not a terminal gets progress lines within an epoch, a 3-class run
    shows no top-5 error (always 0 there), "1 epoch" is singular, and --threads holds for the
    run and is given back after it."""
    import sknet.training.reports as reports

    monkeypatch.setattr(reports, "PROGRESS_SECONDS", 0.0)  # a line at every 10th step
    threads = torch.get_num_threads()
    summary = train(data="digits:0-2", out=str(tmp_path / "run"), model_kwargs=TINY,
                    input_size=8, epochs=1, batch_size=10, threads=1)
    log = capsys.readouterr().err
    assert torch.get_num_threads() == threads and summary["threads"] == 1
    first = next(line for line in log.splitlines() if line.startswith("training "))
    assert "for 1 epoch, batch 10, lr 0.015625 (epoch 1); 1 epoch: too few to keep" in first
    assert "1 process of 1 thread on cpu" in first
    assert "epoch 1/1: step 10/" in log and "img/s, the epoch's steps done in about" in log
    assert "top-1 err" in log and "top-5" not in log
    summary = train(data="digits", out=str(tmp_path / "long"), model_kwargs=TINY,
                    input_size=8, epochs=4, batch_size=64)
    first = next(line for line in capsys.readouterr().err.splitlines()
                 if line.startswith("training "))
    assert "lr 0.1 (epoch 1), 0.01 (epoch 2), 0.001 (epochs 3-4)," in first  # at 0.3, 0.6, 0.9
    assert "too few" not in first
