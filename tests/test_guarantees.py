"""``--sync-bn`` on CPU processes: BatchNorm over the global batch under torchrun (gloo).

Runs use the 21k-parameter ``sknet_digits`` variant of ``tiny.py`` at 8x8 on one thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY

from sknet.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = "{cardinality: 2, base_width: 4, base_out: 16, stem_channels: 8, " \
            "branches: [[3, 1, 2], [3, 2, 2]], min_dim: 4}"
TINY_FLAGS = ["--input-size", "8", "--model-kwargs", TINY_YAML]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

pytestmark = pytest.mark.usefixtures("one_thread")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _state(out):
    return torch.load(Path(out) / "last.pt", weights_only=True)


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
