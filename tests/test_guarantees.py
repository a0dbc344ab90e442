"""What a run guarantees beyond exact resume: one run per output folder (the lock), resume only
into its own run's folder and onto its own data, and ``--sync-bn`` on CPU processes.

Runs use the 21k-parameter ``sknet_digits`` variant of ``tiny.py`` at 8x8 on one thread.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY

from sknet.cli import main
from sknet.training import train
from sknet.training.run_folder import claim, run_id_of
from sknet.training.run_lock import FolderInUse, RunLock

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = "{cardinality: 2, base_width: 4, base_out: 16, stem_channels: 8, " \
            "branches: [[3, 1, 2], [3, 2, 2]], min_dim: 4}"
TINY_FLAGS = ["--input-size", "8", "--model-kwargs", TINY_YAML]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

pytestmark = pytest.mark.usefixtures("one_thread")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err


def _state(out):
    return torch.load(Path(out) / "last.pt", weights_only=True)


def _files(out):
    return {path.name: path.read_bytes() for path in Path(out).iterdir() if path.is_file()}


# -- one run per folder ---------------------------------------------------------------------

HOLD = (
    "import sys, time\n"
    "from sknet.training.run_lock import RunLock\n"
    "RunLock(sys.argv[1]).acquire('sknet train --out ' + sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


def test_the_lock_refuses_a_second_holder_and_cleans_up(tmp_path):
    out = tmp_path / "run"
    first = RunLock(out)
    first.acquire("first --out x")
    with pytest.raises(FolderInUse, match=rf"in use by another run \(pid {os.getpid()}: first"):
        RunLock(out).acquire("second")
    first.release()
    assert not out.exists()  # made by the lock, left empty: removed
    again = RunLock(out)
    again.acquire("third")
    again.release()


def test_a_run_into_a_folder_in_use_is_refused_until_its_holder_dies(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        status, err = _cli(capsys, "train", "--out", out, "--epochs", "1", *TINY_FLAGS)
        assert status == 2 and len(err) == 1, err
        assert err[0].startswith(f"sknet train: error: {out} is in use by another run "
                                 f"(pid {holder.pid}: sknet train --out {out})")
        assert sorted(_files(out)) == [".lock"]  # nothing of ours written
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock died with it, and the stale file is taken over.
    status, err = _cli(capsys, "train", "--out", out, "--epochs", "1", *TINY_FLAGS)
    assert status == 0, err
    assert (out / "last.pt").exists() and not (out / ".lock").exists()


# -- resume only into its own run, onto its own data ----------------------------------------


def test_resume_never_writes_over_another_run(tmp_path, capsys):
    first, other, new = tmp_path / "first", tmp_path / "other", tmp_path / "new"
    train(out=str(first), model_kwargs=TINY, input_size=8, epochs=1)
    train(out=str(other), model_kwargs=TINY, input_size=8, epochs=1, seed=1)
    run_id = _state(first)["run_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", run_id) and run_id != _state(other)["run_id"]
    for name in ("last.pt", "summary.json", "config.yaml"):
        assert run_id_of(first / name) == run_id
    before = _files(other)
    capsys.readouterr()
    status, err = _cli(capsys, "train", "--resume", first / "last.pt", "--out", other,
                       "--epochs", "2")
    assert status == 2 and len(err) == 1, err
    assert f"--out {other} holds another run (last.pt: run {_state(other)['run_id']})" in err[0]
    assert _files(other) == before

    # Into an empty folder, the run continues there, under its own id, and says so.
    status, err = _cli(capsys, "train", "--resume", first / "last.pt", "--out", new,
                       "--epochs", "2")
    assert status == 0
    assert f"the run of {first / 'last.pt'} continues in {new}" in "\n".join(err)
    assert _state(new)["run_id"] == run_id and _state(new)["epoch"] == 2
    assert json.loads((new / "summary.json").read_text())["run_id"] == run_id
    assert claim(new, run_id, first / "last.pt")  # its own files: allowed again
    with pytest.raises(ValueError, match="holds another run"):
        claim(new, None, first / "last.pt")  # a checkpoint without an id owns nothing

    # A new run refuses a folder with another run's results even without its last.pt.
    (other / "last.pt").unlink()
    status, err = _cli(capsys, "train", "--out", other, *TINY_FLAGS)
    assert status == 2 and "holds the results of another run (summary.json" in err[-1]


def test_resume_refuses_other_data(tmp_path, capsys):
    out = tmp_path / "run"
    train(out=str(out), data="digits:0-4", model_kwargs=TINY, input_size=8, epochs=1)
    before = _files(out)
    checkpoint = out / "last.pt"
    capsys.readouterr()
    # The same number of classes, other names.
    status, err = _cli(capsys, "train", "--resume", checkpoint, "--data", "digits:5-9")
    assert status == 2 and len(err) == 1, err
    assert "trained on 5 classes (0, 1, 2, ...) but --data digits:5-9 has 5 (5, 6, 7" in err[0]
    # The same classes, split otherwise.
    status, err = _cli(capsys, "train", "--resume", checkpoint, "--data", "digits:0-4:10",
                       "--epochs", "2")
    assert status == 2 and len(err) == 1, err
    assert err[0] == (
        "sknet train: error: --resume: the run was trained on --data digits:0-4, not "
        "digits:0-4:10; resume on the same --data, or fine-tune from it: --pretrained "
        f"{checkpoint} --out NEW"
    )
    assert _files(out) == before


# -- --sync-bn on CPU processes -----------------------------------------------------------


def test_process_sync_batchnorm_is_batchnorm_over_the_global_batch():
    """Forward, backward and running statistics of two processes equal BatchNorm's over their
    concatenated batches (tests/sync_bn_check.py, under torchrun)."""
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2",
               str(ROOT / "tests" / "sync_bn_check.py")]
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sync-bn check passed" in result.stdout


SHORT = "digits:0-9:13"
"""130 training images: two steps of the global batch of 64 (before float rounding, which the
recipe's learning rate amplifies over an epoch, hides what BatchNorm changes)."""


def _two_processes(out, *flags):
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "sknet", "train",
               "--out", str(out), "--data", SHORT, "--epochs", "1", "--device", "cpu",
               *TINY_FLAGS, *flags]
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return _state(out)["model"]


def _distance(first, second):
    """The largest difference between the float tensors of two state dicts."""
    return max((first[k] - second[k]).abs().max().item()
               for k in first if first[k].is_floating_point())


def test_sync_bn_on_cpu_processes_trains_as_one_process(tmp_path):
    """After two steps at the same global batch, two processes with --sync-bn hold the weights
    of one process up to float rounding; without it, visibly other weights."""
    train(out=str(tmp_path / "one"), data=SHORT, model_kwargs=TINY, input_size=8, epochs=1)
    state = _state(tmp_path / "one")
    assert state["history"][0]["epoch"] == 1 and state["config"]["batch_size"] == 64
    synced = _two_processes(tmp_path / "synced", "--sync-bn")
    plain = _two_processes(tmp_path / "plain")
    near, far = _distance(synced, state["model"]), _distance(plain, state["model"])
    print(f"largest difference to one process after 2 steps: {near:.3g} with --sync-bn, "
          f"{far:.3g} without")
    assert near < 1e-4 and near < far / 100
    assert _state(tmp_path / "synced")["config"]["sync_bn"]
