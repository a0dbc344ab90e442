"""``sknet predict``: images prepared as the weights' config says, top classes printed."""

import numpy as np
import pytest
import torch
from imagefolder import make_image_folder
from PIL import Image
from sklearn.datasets import load_digits
from tiny import TINY

import sknet
from sknet.cli import main
from sknet.data import DigitsSource, FolderSource
from sknet.predict import predict
from sknet.preprocessing import CROP_FRACTION, Preprocessing

pytestmark = pytest.mark.usefixtures("one_thread")


def _digit_pngs(folder, count):
    """The first ``count`` validation digits as 8-bit grey PNGs (0-16 scaled to 0-255)."""
    source = DigitsSource()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        pixels = source.val.images[index, 0].numpy() * 255
        path = folder / f"digit_{index}.png"
        Image.fromarray(np.round(pixels).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return source, paths


def test_predictions_follow_the_validation_pipeline(tiny_run, tmp_path):
    source, paths = _digit_pngs(tmp_path / "images", 24)
    predictions = predict(tiny_run, paths, top=3)
    model = sknet.load_pretrained(tiny_run / "best.safetensors").eval()
    val = source.val_set(8, source.preprocessing(8))
    reference = torch.stack([val[i][0] for i in range(len(paths))])
    with torch.no_grad():
        probabilities = model(reference).softmax(dim=1)
    names = [str(name) for name in load_digits().target_names]
    agree = 0
    for prediction, row in zip(predictions, probabilities, strict=True):
        assert len(prediction.classes) == 3
        values = [p for _, p in prediction.classes]
        assert values == sorted(values, reverse=True)
        best = row.topk(3)
        # PNG pixels are the digits rounded to 1/255: the probabilities barely move.
        got = dict(prediction.classes)
        for value, index in zip(best.values.tolist(), best.indices.tolist(), strict=True):
            if names[index] in got:
                assert got[names[index]] == pytest.approx(value, abs=0.02)
        agree += prediction.classes[0][0] == names[int(row.argmax())]
    assert agree >= len(paths) - 1


def test_cli_prints_the_top_5_with_probabilities(tiny_run, tmp_path, capsys):
    _, paths = _digit_pngs(tmp_path / "images", 2)
    assert main(["predict", *map(str, paths), "--checkpoint", str(tiny_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 6 and lines[0] == str(paths[0]) and lines[6] == str(paths[1])
    expected = predict(tiny_run, paths)
    for block, prediction in zip((lines[1:6], lines[7:12]), expected, strict=True):
        shown = [line.split() for line in block]
        assert [name for _, name in shown] == [name for name, _ in prediction.classes]
        assert [float(p.rstrip("%")) for p, _ in shown] == pytest.approx(
            [100 * p for _, p in prediction.classes], abs=0.006
        )


def test_rgb_weights_are_fed_their_recorded_crop(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=2, val_per_class=1)
    source = FolderSource(folder)
    size = 16
    # The evaluation transform follows the config saved with the weights, which must be the
    # paper's centre crop: shorter side to size / 0.875, centre size x size, mean subtraction.
    assert source.preprocessing(size) == Preprocessing(
        size, round(size / CROP_FRACTION), "bilinear", (123.675, 116.28, 103.53), (1.0, 1.0, 1.0),
        pixel_scale=255.0,
    )
    model = sknet.create_model("sknet_digits", num_classes=3, in_chans=3, **TINY).eval()
    sknet.save_pretrained(model, tmp_path / "w", class_names=source.class_names,
                          preprocessing=source.preprocessing(size))
    path = source.val_files.samples[0][0]
    (prediction,) = predict(tmp_path / "w", [path], top=10)
    assert len(prediction.classes) == 3  # --top beyond the class count shows every class
    assert {name for name, _ in prediction.classes} == set(source.class_names)
    image, _ = source.val_set(size, source.preprocessing(size))[0]
    assert image.shape == (3, size, size)
    with torch.no_grad():
        expected = model(image[None]).softmax(dim=1)[0]
    got = dict(prediction.classes)
    assert [got[name] for name in source.class_names] == pytest.approx(expected.tolist(), abs=1e-6)


def _cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err


def test_bad_images_and_checkpoints_fail_in_one_line(tiny_run, tmp_path, capsys):
    _, (good,) = _digit_pngs(tmp_path / "images", 1)
    missing = tmp_path / "missing.png"
    status, err = _cli(capsys, "predict", good, missing, "--checkpoint", tiny_run)
    assert status == 2 and err == [f"sknet predict: error: {missing}: no such image file"]

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    for bad in (corrupt, truncated):
        status, err = _cli(capsys, "predict", bad, "--checkpoint", tiny_run)
        assert status == 2 and len(err) == 1
        assert err[0].startswith(f"sknet predict: error: {bad}: not a readable image")

    status, err = _cli(capsys, "predict", good, "--checkpoint", tmp_path / "nowhere")
    assert status == 2 and len(err) == 1 and "no weights there" in err[0]
    # last.pt carries the same record as best.json (its preprocessing included): it predicts.
    assert predict(tiny_run / "last.pt", [good]) == predict(tiny_run, [good])
    release = sknet.create_model("sknet_digits", **TINY)
    release.save_pretrained(tmp_path / "bare")  # nobody said how to prepare its inputs
    status, err = _cli(capsys, "predict", good, "--checkpoint", tmp_path / "bare")
    assert status == 2 and len(err) == 1 and "record no preprocessing" in err[0]
    status, err = _cli(capsys, "predict", good, "--checkpoint", tiny_run, "--top", "0")
    assert status == 2 and "--top must be at least 1" in err[0]


def test_16_bit_and_rotated_images_predict_as_the_8_bit_upright_ones(tiny_run, tmp_path):
    """On 2500fe3 a 16-bit PNG was read 99.6% white and EXIF orientation was ignored: predict
    reads files as training and evaluation do (sknet.data.read_image)."""
    _, paths = _digit_pngs(tmp_path / "images", 6)
    deep, turned = [], []
    for path in paths:
        pixels = np.asarray(Image.open(path)).astype("<u2") * 257
        deep.append(tmp_path / f"{path.stem}_16.png")
        Image.frombytes("I;16", pixels.shape[::-1], pixels.tobytes()).save(deep[-1])
        exif = Image.Exif()
        exif[0x0112] = 8  # turned: stored rotated, shown upright
        turned.append(tmp_path / f"{path.stem}_turned.png")
        Image.open(path).transpose(Image.Transpose.ROTATE_270).save(turned[-1], exif=exif)
    expected = [prediction.classes for prediction in predict(tiny_run, paths)]
    assert [prediction.classes for prediction in predict(tiny_run, deep)] == expected
    assert [prediction.classes for prediction in predict(tiny_run, turned)] == expected


def test_a_file_name_of_any_encoding_prints(tiny_run, tmp_path, capsys):
    """A name in bytes that are not UTF-8 is printed with ``\\xff`` escapes, not a crash."""
    import os

    _, (path,) = _digit_pngs(tmp_path / "images", 1)
    odd = os.path.join(os.fsencode(path.parent), b"digit\xff.png")
    os.rename(path, odd)
    assert main(["predict", os.fsdecode(odd), "--checkpoint", str(tiny_run), "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path.parent}/digit\\xff.png" and len(lines) == 2
