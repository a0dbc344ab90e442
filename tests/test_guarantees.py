"""What a run guarantees beyond exact resume: one run per output folder (the lock), resume only
into its own run's folder and onto its own data, SIGTERM/SIGINT stop with a resumable checkpoint
(alone and under torchrun), and ``--sync-bn`` on CPU processes.

Runs use the 21k-parameter ``sknet_digits`` variant of ``tiny.py`` at 8x8 on one thread.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny import TINY

from sknet.cli import main
from sknet.training import train
from sknet.training.run_folder import claim, run_id_of
from sknet.training.run_lock import FolderInUse, RunLock
from sknet.training.signals import StopSignals

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


def _same(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _files(out):
    return {path.name: path.read_bytes() for path in Path(out).iterdir() if path.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted two-epoch run, as the interrupted ones below are launched."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    train(out=str(out), model_kwargs=TINY, input_size=8, epochs=2, save_every=3)
    return out


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


# -- signals ----------------------------------------------------------------------------------


def test_stop_signals_raise_a_flag_once_then_give_the_signal_back():
    previous = signal.getsignal(signal.SIGTERM)
    interrupt = signal.getsignal(signal.SIGINT)
    stop = StopSignals()
    with stop:
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # Python runs the handler between bytecodes
        assert stop.received == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == previous  # a second one acts at once
    assert signal.getsignal(signal.SIGINT) == interrupt
    result = []

    def elsewhere():
        with StopSignals():
            result.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert result == [interrupt]  # only the main thread installs handlers


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell's child ignores it


def _wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


STOPPED = re.compile(
    r"stopped by (SIG\w+) (?:at epoch (\d+), step (\d+) of 22|after epoch (\d+) of 2); saved "
    r"(\S+); resume with: sknet train --resume (\S+)( \(launched by torchrun as before\))?"
)


def _where(line):
    """(epoch, step) of last.pt that a stop message states."""
    match = STOPPED.fullmatch(line)
    assert match, line
    if match[2]:
        return int(match[2]) - 1, int(match[3])
    return int(match[4]), 0


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_at_a_step_with_a_resumable_checkpoint(reference, tmp_path, signum,
                                                                status):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sknet", "train", "--out", str(out), "--epochs", "2",
               "--save-every", "3", *TINY_FLAGS]
    process = subprocess.Popen(command, env=_env(), stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_sigint)
    _wait_for(out / "last.pt", process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stopped by {signal.Signals(signum).name} ")
    assert last.endswith(f"; saved {out / 'last.pt'}; resume with: sknet train --resume "
                         f"{out / 'last.pt'}")
    state = _state(out)
    assert (state["epoch"], state["step"]) == _where(last) and state["epoch"] < 2
    assert not (out / ".lock").exists()
    train(resume=out / "last.pt")
    assert _same(_state(out)["model"], _state(reference)["model"])


def _child(parent, rank):
    """The pid of torchrun's worker of ``rank``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def test_a_signal_to_one_torchrun_process_stops_all_at_the_same_step(tmp_path):
    """SIGTERM reaches rank 1 alone: rank 0 stops at the same step (else the run would hang in
    a collective), writes last.pt and says how to resume; both exit 143."""
    out = tmp_path / "ddp"
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "sknet", "train",
               "--out", str(out), "--epochs", "2", "--save-every", "3", "--device", "cpu",
               *TINY_FLAGS]
    process = subprocess.Popen(command, env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for(out / "last.pt", process, 300)
    worker = _child(process.pid, 1)
    assert worker is not None, "no rank-1 worker found"
    os.kill(worker, signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("stopped by")]
    assert len(lines) == 1, err[-3000:]  # rank 0 alone logs
    assert lines[0].startswith("stopped by SIGTERM ")
    assert lines[0].endswith("(launched by torchrun as before)")
    state = _state(out)
    assert (state["epoch"], state["step"]) == _where(lines[0]) and state["world_size"] == 2


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
