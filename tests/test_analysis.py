"""The attention analysis of Section 4.4: stimulus, capture, streamed statistics, files, errors.

Checkpoints are a 21k-parameter sknet_digits variant trained for one epoch at 8x8 (about a
second), or freshly initialised models saved in the released format (resnest_digits for split
attention; LSK units are tested in test_spatial.py).
"""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from imagefolder import make_image_folder
from PIL import Image
from tiny import TINY

from sknet.analysis import (
    FILES,
    analyze,
    capture_attention,
    crop_side,
    default_class_units,
    default_unit,
    enlarge,
    format_findings,
    scale_label,
    selecting_units,
    stage_units,
)
from sknet.cli import main
from sknet.data import open_data
from sknet.evaluation import evaluate
from sknet.models import create_model, load_pretrained, save_pretrained

QUICK = {"limit": 60, "batch_size": 16, "progress": False}
"""60 of the 360 validation digits, evenly spaced, in batches of 16 (the last one partial)."""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def analysed(tiny_run, tmp_path_factory):
    """The analysis the tests compare against, at one thread as they run (identical files)."""
    out = tmp_path_factory.mktemp("analysis")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    report = analyze(tiny_run, out=out, **QUICK)
    torch.set_num_threads(threads)
    return report, out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _cli(capsys, *argv):
    status = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


# -- the stimulus ----------------------------------------------------------------------------


def test_two_x_is_the_central_half_resized():
    ramp = torch.arange(16.0).expand(1, 3, 16, 16)  # pixel value = column index
    enlarged = enlarge(ramp, 2.0)
    central_half = ramp[..., 4:12, 4:12]
    assert torch.equal(enlarged, F.interpolate(central_half, size=(16, 16), mode="bilinear"))
    # Bilinear upsampling by 2 (half-pixel centres): columns 4..11 spread over 16 pixels.
    expected = 4 + torch.clamp((torch.arange(16.0) + 0.5) / 2 - 0.5, 0, 7)
    assert torch.allclose(enlarged[0, 0, 0], expected)
    square = torch.zeros(1, 16, 16)
    square[:, 6:10, 6:10] = 1  # a 4-pixel object ...
    assert (enlarge(square, 2.0) > 0.5).sum() == 8 * 8  # ... is 8 pixels wide at 2.0x
    assert torch.equal(enlarge(ramp, 1.0), ramp)
    assert [crop_side(224, s) for s in (1.0, 1.5, 2.0)] == [224, 149, 112]
    with pytest.raises(ValueError, match="scale must be a number >= 1"):
        enlarge(ramp, 0.5)


# -- capture and unit names -------------------------------------------------------------------


@pytest.mark.parametrize("branches", [TINY["branches"], [[3, 1, 2], [3, 2, 2], [3, 3, 2]]])
def test_captured_attention_has_one_weight_per_branch_and_channel(branches):
    model = create_model("sknet_digits", **{**TINY, "branches": branches}).eval()
    units = selecting_units(model)
    attention = capture_attention(model, torch.randn(5, 1, 8, 8))
    assert list(attention) == ["SK_2_1", "SK_3_1", "SK_4_1"] == list(units)
    widths = {"SK_2_1": 8, "SK_3_1": 16, "SK_4_1": 32}  # cardinality 2 x width 4, 8, 16
    for name, weights in attention.items():  # [images, M, C] for each unit
        channels = widths[name]
        assert weights.shape == (5, len(branches), channels)
        assert torch.allclose(weights.sum(1), torch.ones(5, channels))
        assert units[name].receptive_fields == [3, 5, 7][: len(branches)]
        assert not units[name].attention._forward_hooks  # the hooks are gone afterwards


def test_default_units_follow_the_paper():
    with torch.device("meta"):
        sknet50 = list(create_model("sknet50").sk_units())
        shufflenet = list(create_model("sk_shufflenet_v2_x0_5").sk_units())
    assert default_unit(sknet50) == "SK_3_4"
    assert stage_units(sknet50) == ["SK_2_3", "SK_3_4", "SK_4_6", "SK_5_3"]
    assert default_class_units(sknet50) == ["SK_2_3", "SK_3_4", "SK_5_3"]
    assert default_unit(shufflenet) == "SK_3_8"
    assert stage_units(shufflenet) == ["SK_2_4", "SK_3_8", "SK_4_4"]
    digits = ["SK_2_1", "SK_3_1", "SK_4_1"]
    assert default_unit(digits) == "SK_3_1" and default_class_units(digits) == digits


# -- the analysis of a checkpoint ------------------------------------------------------------


def test_files_exist_with_their_columns_and_valid_pictures(analysed):
    report, out = analysed
    assert sorted(path.name for path in out.iterdir()) == sorted(FILES)
    for name in FILES:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                image.verify()
                assert image.format == "PNG" and image.size[0] > 600
    units = _rows(out / "units.csv")
    assert list(units[0]) == [
        "source", "index", "unit", "channels", "receptive_fields", "scale", "crop", "images",
        "diff_mean", "diff_std", "change_mean", "change_std", "rising",
        "branch1_rf", "branch1_mean", "branch1_std", "branch2_rf", "branch2_mean", "branch2_std",
    ]
    assert len(units) == 3 * 3 * 3  # (all, sample a, sample b) x 3 units x 3 scales
    assert {row["source"] for row in units} == {"all", "sample_a", "sample_b"}
    channels = _rows(out / "channels.csv")
    assert list(channels[0]) == ["source", "index", "unit", "scale", "channel", "branch",
                                 "receptive_field", "mean", "std"]
    assert len(channels) == 3 * 3 * 2 * 16  # sources x scales x branches x SK_3_1's channels
    classes = _rows(out / "classes.csv")
    assert list(classes[0]) == ["unit", "scale", "class_index", "class_name", "images",
                                "diff_mean", "diff_std"]
    assert len(classes) == 3 * 3 * 10
    assert json.loads((out / "analysis.json").read_text()) == report
    assert report["images"] == 60 and report["unit"] == "SK_3_1"
    assert report["crops"] == [8, 5, 4]


def test_streamed_statistics_equal_a_direct_computation(tiny_run, analysed):
    """Running sums over batches of 16 give the numbers of one pass over all 60 images."""
    report, out = analysed
    source = open_data("digits")
    dataset = source.val_set(8, source.preprocessing(8))
    picked = [index * len(dataset) // 60 for index in range(60)]
    images = torch.stack([dataset[index][0] for index in picked])
    labels = torch.tensor([dataset[index][1] for index in picked])
    from sknet import load_pretrained

    model = load_pretrained(tiny_run / "best.safetensors").eval()
    rows = {(row["unit"], float(row["scale"])): row
            for row in _rows(out / "units.csv") if row["source"] == "all"}
    first = None
    for scale in (1.0, 1.5, 2.0):
        attention = capture_attention(model, enlarge(images, scale))
        for name, weights in attention.items():
            difference = (weights[:, 1] - weights[:, 0]).mean(1).double()
            first = difference if scale == 1.0 and name == "SK_2_1" else first
            row = rows[(name, scale)]
            assert float(row["diff_mean"]) == pytest.approx(difference.mean().item(), abs=1e-6)
            assert float(row["diff_std"]) == pytest.approx(difference.std().item(), abs=1e-6)
            assert float(row["branch2_mean"]) == pytest.approx(weights[:, 1].mean().item(),
                                                               abs=1e-6)
            per_class = report["classes"]["units"][name]["mean"][report["scales"].index(scale)]
            for label in range(10):
                expected = difference[labels == label].mean().item()
                assert per_class[label] == pytest.approx(expected, abs=1e-6)
            if name == "SK_2_1" and scale == 2.0:
                change = difference - first
                assert float(row["change_mean"]) == pytest.approx(change.mean().item(), abs=1e-6)
                assert float(row["rising"]) == pytest.approx((change > 0).double().mean().item())
            if name == report["unit"]:
                channel = report["channels"]["mean"][report["scales"].index(scale)]
                expected = weights.double().mean(0)
                assert torch.allclose(torch.tensor(channel).double(), expected, atol=1e-6)


def test_same_checkpoint_gives_identical_files(tiny_run, analysed, tmp_path):
    _, first = analysed
    analyze(tiny_run, out=tmp_path / "again", **QUICK)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (first / name).read_bytes(), name
    # last.pt holds the same (only) epoch's weights as best.safetensors: same numbers.
    analyze(tiny_run / "last.pt", out=tmp_path / "last", **QUICK)
    for name in ("units.csv", "channels.csv", "classes.csv"):
        assert (tmp_path / "last" / name).read_bytes() == (first / name).read_bytes(), name
    # and sknet eval takes last.pt too
    assert evaluate(tiny_run / "last.pt")["results"] == evaluate(tiny_run)["results"]


def test_cli_prints_the_findings_and_takes_every_option(tiny_run, tmp_path, capsys):
    out = tmp_path / "cli"
    best = str(tiny_run / "best.safetensors")
    status = main(["analyze", "--checkpoint", best, "--data", "digits",
                   "--out", str(out), "--scales", "1.0", "2.0", "--unit", "SK_2_1",
                   "--units", "SK_4_1", "--samples", "3", "7", "--limit", "20",
                   "--batch-size", "8", "--workers", "0", "--channel-group", "2"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "sknet_digits on digits: 20 images at 1.0x, 2.0x" in printed
    assert "SK_4_1: " not in printed and "SK_4_1 " in printed
    report = json.loads((out / "analysis.json").read_text())
    assert report["command"].startswith("sknet analyze --checkpoint")
    assert report["unit"] == "SK_2_1" and report["class_units"] == ["SK_4_1"]
    assert [sample["index"] for sample in report["samples"]] == [3, 7]
    groups = report["channels"]["group_mean"][0][0]  # SK_2_1's 8 channels in pairs
    assert report["channel_group"] == 2 and len(groups) == 4


def test_in_memory_data_is_analysed_without_loader_processes(tiny_run, tmp_path, monkeypatch):
    """Digits are tensors in memory: loader processes would only cost their start-up."""
    import sknet.analysis.run as run

    workers = []
    loader = run.DataLoader

    def spy(*args, **kwargs):
        workers.append(kwargs["num_workers"])
        return loader(*args, **kwargs)

    monkeypatch.setattr(run, "DataLoader", spy)
    analyze(tiny_run, out=tmp_path / "a", **QUICK)
    analyze(tiny_run, out=tmp_path / "b", workers=1, **QUICK)
    assert workers == [0, 1]


def test_scales_off_one_decimal_are_labelled_and_analysed(tiny_run, tmp_path, capsys):
    """`--scales 1.0 1.25 1.5 2.0` (a README command) once recursed forever in its label."""
    assert [scale_label(s) for s in (1.0, 1.25, 1.5, 2.0, 3.125)] == [
        "1.0x", "1.25x", "1.5x", "2.0x", "3.125x"
    ]
    status = main(["analyze", "--checkpoint", str(tiny_run / "last.pt"), "--out",
                   str(tmp_path / "a"), "--scales", "1.0", "1.25", "1.5", "2.0",
                   "--unit", "SK_3_1", "--limit", "10"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "10 images at 1.0x, 1.25x, 1.5x, 2.0x" in printed and "1.0x->1.25x" in printed


def test_a_folder_dataset_streams_and_skips_unreadable_files(tmp_path):
    folder = make_image_folder(tmp_path / "images", bad=True)
    source = open_data(str(folder))
    model = create_model("sknet_digits", num_classes=3, **{**TINY, "in_chans": 3})
    save_pretrained(model, tmp_path / "rgb", class_names=source.class_names,
                    preprocessing=source.preprocessing(16), dataset=str(folder))
    report = analyze(tmp_path / "rgb", out=tmp_path / "out", samples=[0, 4], batch_size=4,
                     progress=False)
    assert report["images"] == 9 and len(report["skipped"]) == 1
    assert report["skipped"][0].endswith("truncated.jpg")
    assert report["classes"]["images"] == [3.0, 3.0, 3.0]
    with Image.open(tmp_path / "out" / "fig3a.png") as image:
        image.verify()


def test_class_and_file_names_of_any_encoding_are_analysed(tmp_path, capsys):
    """A class folder or file named in bytes that are not UTF-8 (``class_\\xff``) is written as
    ``\\xff`` escapes in the tables and the log line (on 2500fe3 the CSV write crashed)."""
    import os

    folder = make_image_folder(tmp_path / "images", per_class=1, val_per_class=2, bad=True)
    for split in ("train", "val"):
        os.rename(folder / split / "class_1",
                  os.path.join(os.fsencode(folder / split), b"class_\xff"))
    os.rename(folder / "val" / "class_0" / "truncated.jpg",
              os.path.join(os.fsencode(folder / "val" / "class_0"), b"trunc\xfe.jpg"))
    source = open_data(str(folder))
    model = create_model("sknet_digits", num_classes=3, **{**TINY, "in_chans": 3})
    save_pretrained(model, tmp_path / "rgb", class_names=source.class_names,
                    preprocessing=source.preprocessing(16), dataset=str(folder))
    report = analyze(tmp_path / "rgb", out=tmp_path / "out", batch_size=4, progress=False)
    assert report["images"] == 6 and report["skipped"][0].endswith("trunc\udcfe.jpg")
    assert "trunc\\xfe.jpg: unreadable" in capsys.readouterr().out
    assert "class_\\xff" in (tmp_path / "out" / "classes.csv").read_text(encoding="utf-8")


# -- bad input: one line, non-zero exit ------------------------------------------------------


def test_bad_inputs_fail_in_one_line(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "out")
    analyze_run = ("analyze", "--checkpoint", str(tiny_run), "--out", out)
    status, line = _cli(capsys, "analyze", "--checkpoint", str(tmp_path / "nowhere"),
                        "--out", out)
    assert status == 2 and line.startswith("sknet analyze: error: --checkpoint")
    assert "no weights there" in line
    status, line = _cli(capsys, "analyze", "--checkpoint", str(tmp_path / "last.pt"),
                        "--out", out)
    assert status == 2 and "no such checkpoint" in line
    status, line = _cli(capsys, *analyze_run, "--unit", "SK_9_9")
    assert status == 2 and "--unit SK_9_9: no such SK unit" in line
    assert "SK_2_1, SK_3_1, SK_4_1" in line
    status, line = _cli(capsys, *analyze_run, "--units", "SK_2_1", "conv1")
    assert status == 2 and "--units conv1: no such SK unit" in line
    status, line = _cli(capsys, *analyze_run, "--scales", "0.5")
    assert status == 2 and "--scales 0.5" in line
    status, line = _cli(capsys, *analyze_run, "--samples", "0", "360")
    assert status == 2 and "--samples 360: out of range" in line
    assert not Path(out).exists()  # nothing written by a failed run


@pytest.mark.parametrize("kind", ["no SK units", "no attention"])
def test_a_model_without_selection_fails_in_one_line(kind, tmp_path, capsys):
    if kind == "no SK units":
        model = create_model("shufflenet_v2_x0_5", num_classes=10)
    else:
        model = create_model("sknet_digits", **{**TINY, "attention": False})
    save_pretrained(model, tmp_path / "weights", dataset="digits",
                    preprocessing={"input_size": 8})
    status, line = _cli(capsys, "analyze", "--checkpoint", str(tmp_path / "weights"),
                        "--out", str(tmp_path / "out"))
    assert status == 2 and line.startswith("sknet analyze: error: model ")
    assert kind in line


# -- split attention (ResNeSt's unit): the splits' weights, contrasted last minus first --------


def test_split_attention_is_analysed_split_by_split(tmp_path):
    """resnest_digits, freshly initialised (its attention made to vary, so the splits differ), on 60
    scaled digits of known size: every file, the difference recomputed from the captured weights
    as split 2 minus split 1, and the labels saying it is one kernel."""
    spec = "scaled-digits:16"
    source = open_data(spec)
    torch.manual_seed(0)
    model = create_model("resnest_digits")
    for unit in model.sk_units().values():
        for layer in (unit.attention.reduce.conv, unit.attention.expand):
            torch.nn.init.normal_(layer.weight, std=0.5)
    save_pretrained(model, tmp_path / "weights", dataset=spec, class_names=source.class_names,
                    preprocessing=source.preprocessing(16))
    report = analyze(tmp_path / "weights", out=tmp_path / "out", scales=[1.0, 2.0], **QUICK)
    assert {*FILES, "sizes.csv", "fig_size.png"} == {path.name for path in
                                                     (tmp_path / "out").iterdir()}
    for unit in report["units"].values():
        assert unit["receptive_fields"] == [3, 3] and (unit["large"], unit["small"]) == (1, 0)
        assert unit["branches"] == [[3, 1, 4], [3, 1, 4]]  # one kernel: 3x3 of 4 groups, twice
    findings = format_findings(report)
    assert "mean attention difference (split 2 (3x3) − split 1 (3x3))" in findings
    assert "mean attention on split 2 (3x3) rises" in findings

    indices = [index * len(source.val) // 60 for index in range(60)]
    val = source.val_set(16, source.preprocessing(16))
    images = torch.stack([val[index][0] for index in indices])
    rows = {(row["unit"], float(row["scale"])): row
            for row in _rows(tmp_path / "out" / "units.csv") if row["source"] == "all"}
    trained = load_pretrained(tmp_path / "weights").eval()
    for scale in (1.0, 2.0):
        for name, weights in capture_attention(trained, enlarge(images, scale)).items():
            assert weights.shape == (60, 2, report["units"][name]["channels"])
            assert torch.allclose(weights.sum(1), torch.ones(60, weights.shape[-1]))
            assert (weights[:, 1] - weights[:, 0]).std() > 0.01  # not 1/2 each: the splits differ
            difference = (weights[:, 1] - weights[:, 0]).mean(1).double()
            row = rows[(name, scale)]
            assert float(row["diff_mean"]) == pytest.approx(difference.mean().item(), abs=1e-6)
            assert float(row["branch1_mean"]) == pytest.approx(weights[:, 0].mean().item(),
                                                               abs=1e-6)
    for values in report["sizes"]["units"].values():
        assert all(math.isfinite(values[key]) for key in ("slope", "slope_se", "correlation"))


def test_split_attention_of_radix_one_fails_in_one_line(tmp_path, capsys):
    save_pretrained(create_model("resnest_digits", radix=1), tmp_path / "weights",
                    dataset="digits", preprocessing={"input_size": 8})
    status, line = _cli(capsys, "analyze", "--checkpoint", str(tmp_path / "weights"),
                        "--out", str(tmp_path / "out"))
    assert status == 2 and "its split-attention units have radix 1" in line
