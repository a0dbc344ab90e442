"""The analysis of LSK units (``sknet.analysis.spatial``): the object's box on the canvas, the map
cells placed on it, the share of the larger kernel on the object and around it, the refusals.

The network is a freshly initialised ``lsknet_digits`` in the released format, analysed on 60
scikit-learn digits pasted on the 32-pixel canvas (``scaled-digits``): a few seconds.
"""

import csv
import json
import math

import pytest
import torch

from sknet.analysis import (
    SPATIAL_FILES,
    analyze,
    capture_attention,
    format_findings,
    selecting_units,
)
from sknet.analysis.spatial import REGIONS, nearest_cells, on_canvas
from sknet.cli import main
from sknet.data import open_data
from sknet.data.scaled import box_masks
from sknet.layers import LSKUnit, SKConv
from sknet.models import create_model, load_pretrained, save_pretrained

SPEC = "scaled-digits"
QUICK = {"limit": 60, "batch_size": 32, "progress": False}
"""60 of the 2,160 validation canvases, evenly spaced: ten at each of the six heights."""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source():
    return open_data(SPEC)


@pytest.fixture(scope="module")
def weights(source, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lsk") / "weights"
    save_pretrained(create_model("lsknet_digits"), path, dataset=SPEC,
                    class_names=source.class_names, preprocessing=source.preprocessing(32))
    return path


@pytest.fixture(scope="module")
def analysed(weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("lsk_analysis")
    return analyze(weights, out=out, **QUICK), out


def test_the_boxes_are_the_digits_ink_and_the_masks_their_pixels(source):
    images = source.val.images[::97, 0]
    boxes = source.val_boxes[::97]
    masks = box_masks(boxes, 32)
    for image, box, mask in zip(images, boxes.tolist(), masks, strict=True):
        ink = image > 0.1 * image.max()
        rows, columns = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
        assert box == [rows[0], rows[-1], columns[0], columns[-1]]
        assert mask.sum() == (box[1] - box[0] + 1) * (box[3] - box[2] + 1)
        assert not (ink & ~mask).any()  # every inked pixel is in the object region
    heights = boxes[:, 1] - boxes[:, 0] + 1
    assert torch.equal(heights, source.val_sizes[::97, 0])


def test_each_pixel_takes_the_map_cell_whose_centre_is_nearest():
    assert nearest_cells(32, 32).tolist() == list(range(32))
    for cells in (8, 4, 2):
        stride = 32 // cells
        centres = torch.arange(cells) * stride  # a "same"-padded stride-S conv centres cell i here
        distance = (torch.arange(32)[:, None] - centres[None]).abs().double()
        nearest = (distance - 1e-6 * torch.arange(cells)).argmin(1)  # ties: the later cell
        assert torch.equal(nearest_cells(32, cells), nearest)
    share = torch.arange(4.0).view(1, 2, 2)
    canvas = on_canvas(share, 32)
    assert canvas[0, 7, 7] == 0 and canvas[0, 8, 7] == 2 and canvas[0, 7, 8] == 1
    assert canvas[0, 31, 31] == 3 and (canvas[0, 8:, 8:] == 3).all()


def test_files_shapes_and_ranges(analysed):
    report, out = analysed
    assert sorted(path.name for path in out.iterdir()) == sorted(SPATIAL_FILES)
    assert json.loads((out / "analysis.json").read_text()) == report
    assert report["images"] == 60 and report["scales"] == [1.0]
    assert list(report["units"]) == ["SK_1_1", "SK_2_1", "SK_3_1"]
    assert [unit["map_size"] for unit in report["units"].values()] == [[8, 8], [4, 4], [2, 2]]
    assert all(unit["receptive_fields"] == [5, 23] and (unit["large"], unit["small"]) == (1, 0)
               for unit in report["units"].values())
    with open(out / "regions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 * len(REGIONS) * 6 and {row["region"] for row in rows} == set(REGIONS)
    assert all(int(row["images"]) == 10 for row in rows)
    for row in rows:
        low = -1 if row["region"] == "difference" else 0
        assert low <= float(row["share_mean"]) <= 1
    for regions in report["sizes"]["units"].values():
        assert set(regions) == set(REGIONS)
        for values in regions.values():
            assert all(math.isfinite(values[key]) for key in ("slope", "slope_se", "correlation"))
    for sample in report["samples"]:
        for values in sample["units"].values():
            assert 0 <= values["object"] <= 1 and 0 <= values["background"] <= 1
    printed = format_findings(report)
    assert "lsknet_digits on scaled-digits: 60 images at 1.0x" in printed
    assert "SK_1_1    8x8    object" in printed and "SK_3_1    2x2    background" in printed


def test_region_shares_equal_a_direct_computation(weights, analysed, source):
    """Each image's share averaged over its box's pixels and over the others, recomputed from the
    captured weights with the cells placed by distance, binned by height as the report is."""
    report, _ = analysed
    indices = [index * len(source.val) // 60 for index in range(60)]
    val = source.val_set(32, source.preprocessing(32))
    images = torch.stack([val[index][0] for index in indices])
    attention = capture_attention(load_pretrained(weights).eval(), images)
    boxes = source.val_boxes[indices].tolist()
    for name, weights_ in attention.items():
        share = (weights_[:, 1] / (weights_[:, 0] + weights_[:, 1])).double()
        cells = share.shape[-1]
        centres = torch.arange(cells) * (32 / cells)
        pixel_cell = ((torch.arange(32)[:, None] - centres).abs() - 1e-6 * torch.arange(cells))
        pixel_cell = pixel_cell.argmin(1)
        inside, outside = [], []
        for image_share, (top, bottom, left, right) in zip(share, boxes, strict=True):
            canvas = image_share[pixel_cell][:, pixel_cell]
            mask = torch.zeros(32, 32, dtype=torch.bool)
            mask[top : bottom + 1, left : right + 1] = True
            inside.append(canvas[mask].mean())
            outside.append(canvas[~mask].mean())
        inside, outside = torch.stack(inside), torch.stack(outside)
        values = report["sizes"]["units"][name]
        for position in range(6):  # ten images per height, in order
            chosen = slice(10 * position, 10 * position + 10)
            assert values["object"]["mean"][position] == pytest.approx(
                inside[chosen].mean().item(), abs=1e-6)
            assert values["background"]["mean"][position] == pytest.approx(
                outside[chosen].mean().item(), abs=1e-6)
            assert values["difference"]["mean"][position] == pytest.approx(
                (inside - outside)[chosen].mean().item(), abs=1e-6)


def test_selection_forced_onto_the_ink_is_found_on_the_object(weights, tmp_path, monkeypatch):
    """Every LSK unit made to prefer its larger kernel (branch 1) where its cell holds ink and
    its smaller one elsewhere: the object's share must exceed the background's (at every size,
    on maps of 4x4 and more), which fails if the mask, its placement or the branch order is
    wrong."""
    import sknet.analysis.run as run

    opened = run.open_trained

    def forced(*args, **kwargs):
        trained = opened(*args, **kwargs)
        seen = {}
        trained.model.register_forward_pre_hook(lambda module, inputs: seen.update(x=inputs[0]))

        def prefer_large_on_ink(module, inputs, weights_):
            x = seen["x"]
            ink = (x > x.amin((1, 2, 3), keepdim=True) + 0.1).double()
            inked = torch.nn.functional.adaptive_max_pool2d(ink, weights_.shape[-2:])[:, 0]
            large = 0.1 + 0.8 * inked.to(weights_.dtype)
            return torch.stack([torch.full_like(large, 0.5), large], 1)

        for unit in trained.model.sk_units().values():
            unit.attention.register_forward_hook(prefer_large_on_ink)
        return trained

    monkeypatch.setattr(run, "open_trained", forced)
    report = analyze(weights, out=tmp_path / "forced", **QUICK)
    for name, regions in report["sizes"]["units"].items():
        assert regions["difference"]["overall"] > 0.02, name
        if report["units"][name]["map_size"][0] >= 4:  # a 2x2 map: a large digit inks every cell
            assert min(regions["difference"]["mean"]) > 0.05, name


def test_what_does_not_apply_is_refused_in_one_line(weights, tmp_path, capsys):
    def refused(*argv):
        status = main(["analyze", "--checkpoint", str(weights), "--out",
                       str(tmp_path / "out"), *argv])
        return status, capsys.readouterr().err.strip().splitlines()[-1]

    status, line = refused("--data", "digits")
    assert status == 2 and "--data digits: LSK units select per position" in line
    assert "scaled-mnist or scaled-digits" in line
    status, line = refused("--scales", "1.0", "2.0")
    assert status == 2 and "--scales: LSK units are analysed on the images as they are" in line
    status, line = refused("--unit", "SK_1_1")
    assert status == 2 and line.endswith("--unit: a per-channel or per-class option, and LSK "
                                         "units select per position (their weights have no "
                                         "channels); leave it out")
    assert not (tmp_path / "out").exists()


def test_a_model_mixing_per_channel_and_spatial_units_is_refused():
    class Mixed(torch.nn.Module):
        def sk_units(self) -> dict[str, torch.nn.Module]:
            return {"SK_2_1": SKConv(8, 8, branches=[[3, 1, 1], [3, 2, 1]]), "SK_3_1": LSKUnit(8)}

    with pytest.raises(ValueError, match="mixes units that select per position"):
        selecting_units(Mixed())
