"""Datasets from --data specs: digits, image folders (with bad files), CIFAR; the epoch sampler."""

import shutil
from collections import Counter

import pytest
import torch
from imagefolder import make_image_folder

from sknet.data import (
    EpochBatches,
    Skipped,
    collate,
    eval_transform,
    open_data,
    read_image,
)
from sknet.data.synthetic import _SyntheticImages
from sknet.preprocessing import Preprocessing


def test_digits_split_is_fixed_and_stratified():
    source = open_data("digits")
    assert (len(source.train), len(source.val)) == (1437, 360)
    assert source.class_names == [str(i) for i in range(10)] and source.channels == 1
    assert all(34 <= n <= 38 for n in Counter(source.val.targets.tolist()).values())
    again = open_data("digits")
    assert torch.equal(source.val.images, again.val.images)

    image, target = source.val_set(16, source.preprocessing(16))[0]
    assert image.shape == (1, 16, 16) and isinstance(target, int)
    train = source.train_set(16, 1.0, source.preprocessing(16))
    first, _, skipped = train[(5, 123)]
    assert skipped == () and first.shape == (1, 16, 16)
    assert torch.equal(first, train[(5, 123)][0])  # same seed, same augmentation
    shifts = {train[(5, seed)][0].sum().item() for seed in range(12)}
    assert len(shifts) > 1  # the seed moves the random shift
    val = source.val_set(16, source.preprocessing(16))
    assert abs(torch.stack([val[i][0] for i in range(360)]).mean()) < 0.2


def test_epoch_batches_split_global_batches_across_processes():
    single = EpochBatches(100, 8, seed=3)
    single.set_epoch(2)
    batches = list(single)
    assert len(batches) == len(single) == 12  # 100 // 8, the incomplete batch dropped
    assert len({index for batch in batches for index, _ in batch}) == 96
    ranks = [EpochBatches(100, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    shares = [list(sampler) for sampler in ranks]
    for step, batch in enumerate(batches):
        assert shares[0][step] + shares[1][step] == batch

    single.set_epoch(2, start=5)
    assert list(single) == batches[5:] and len(single) == 7
    single.set_epoch(3)
    assert list(single) != batches

    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        EpochBatches(100, 8, seed=0, world_size=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatches(5, 8, seed=0)


def test_image_folder(tmp_path):
    source = open_data(str(make_image_folder(tmp_path)))
    assert source.kind == "imagenet" and source.class_names == ["class_0", "class_1", "class_2"]
    assert (len(source.train_files), len(source.val_files)) == (24, 9) and not source.skipped
    image, target, _ = source.train_set(16, 0.08, source.preprocessing(16))[(4, 0)]
    assert image.shape == (3, 16, 16) and target == 0
    image, target = source.val_set(16, source.preprocessing(16))[8]
    assert image.shape == (3, 16, 16) and target == 2
    preprocessing = source.preprocessing(224)
    assert preprocessing.resize == 256 and preprocessing.input_size == 224
    assert preprocessing.pixel_scale == 255 and preprocessing.std == (1.0, 1.0, 1.0)


def test_folder_validation_follows_the_weights_recorded_preprocessing(tmp_path):
    """Imported weights (e.g. timm's: bicubic, mean/std) are evaluated as they were trained."""
    source = open_data(str(make_image_folder(tmp_path)))
    timm_like = Preprocessing(224, 256, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert timm_like.at(16).resize == 18  # 16 * 256 / 224, rounded
    own, _ = source.val_set(16, source.preprocessing(16))[0]
    followed, _ = source.val_set(16, timm_like)[0]
    path = source.val_files.samples[0][0]
    expected = eval_transform(timm_like.at(16))(read_image(path))
    assert torch.equal(followed, expected)
    assert not torch.allclose(own, followed, atol=0.1)


def test_bad_files_are_skipped_with_their_paths(tmp_path):
    source = open_data(str(make_image_folder(tmp_path, bad=True)))
    assert sorted((s.path.split("/")[-1], s.reason) for s in source.skipped) == [
        ("empty.jpg", "empty file"), ("notes.txt", "not an image file"),
    ]
    train = source.train_set(16, 0.08, source.preprocessing(16))
    garbage = [i for i, (path, _) in enumerate(source.train_files.samples) if "garbage" in path]
    image, _, skipped = train[(garbage[0], 0)]  # replaced by the next readable image
    assert image.shape == (3, 16, 16)
    assert [item.path.split("/")[-1] for item in skipped] == ["garbage.png"]
    val = source.val_set(16, source.preprocessing(16))
    items = [val[i] for i in range(len(val))]
    bad = [item for item in items if isinstance(item, Skipped)]
    assert [item.path.split("/")[-1] for item in bad] == ["truncated.jpg"]
    images, targets, dropped = collate(items[:4])
    assert len(images) == len(targets) == 3 and dropped == bad


def test_strict_rejects_every_bad_file_up_front(tmp_path):
    make_image_folder(tmp_path, bad=True)
    with pytest.raises(ValueError, match=r"--strict: 3 bad file\(s\) in .*train") as error:
        open_data(str(tmp_path), strict=True)
    assert "garbage.png" in str(error.value) or "notes.txt" in str(error.value)


def test_unusable_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such folder.*train/ and val/"):
        open_data(str(tmp_path / "absent"))
    make_image_folder(tmp_path / "data")
    (tmp_path / "data" / "train" / "class_9").mkdir()
    with pytest.raises(ValueError, match="class_9: class folder without images"):
        open_data(str(tmp_path / "data"))
    (tmp_path / "data" / "train" / "class_9").rmdir()
    (tmp_path / "data" / "val" / "class_7").mkdir()
    with pytest.raises(ValueError, match="class_7 are not in the training split"):
        open_data(str(tmp_path / "data"))
    make_image_folder(tmp_path / "noval")
    for path in sorted((tmp_path / "noval" / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "noval" / "val").rmdir()
    with pytest.raises(FileNotFoundError, match="noval/val: no such folder"):
        open_data(str(tmp_path / "noval"))


def test_cifar_is_never_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*cs\.toronto\.edu"):
        open_data(f"cifar10:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        open_data(f"cifar100:{tmp_path}")
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="incomplete or corrupt CIFAR files"):
        open_data(f"cifar10:{tmp_path / 'cifar-10-batches-py'}")
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()


def test_batches_do_not_depend_on_loader_workers():
    from torch.utils.data import DataLoader

    digits = open_data("digits")
    train = digits.train_set(8, 1.0, digits.preprocessing(8))

    def batches(workers, start=0):
        sampler = EpochBatches(len(train), 128, seed=1)
        sampler.set_epoch(4, start)
        loader = DataLoader(train, batch_sampler=sampler, num_workers=workers, collate_fn=collate)
        return [images for images, _, _ in loader]

    in_process = batches(0)
    assert all(torch.equal(a, b) for a, b in zip(in_process, batches(2), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(in_process[6:], batches(0, 6), strict=True))


def test_synthetic_images_are_learnable_and_depend_only_on_their_index():
    source = open_data("synthetic:40")
    assert source.kind == "imagenet" and len(source.class_names) == 1000
    preprocessing = source.preprocessing(24)
    train, val = source.train_set(24, 0.08, preprocessing), source.val_set(24, preprocessing)
    assert len(train) == 40 and len(val) == 4
    image, target, skipped = train[(3, 7)]
    assert image.shape == (3, 24, 24) and target == 3 and skipped == ()
    assert torch.equal(train[(3, 7)][0], image)  # same key, same image
    flipped = {train[(3, seed)][0].flip(-1).equal(image) for seed in range(8)}
    assert flipped == {True, False}  # training flips, by the sample's seed
    first, again = val[0], open_data("synthetic:40").val_set(24, preprocessing)[0]
    assert first[1] == 40 and torch.equal(first[0], again[0])
    # Two images of one class share a pattern: closer to each other than to another class.
    same = _SyntheticImages(2, 0, 24, 1)
    other = _SyntheticImages(2, 0, 24, 2)[1][0]
    assert (same[0][0] - same[1][0]).norm() < (same[0][0] - other).norm()


@pytest.mark.parametrize("spec", ["synthetic:x", "synthetic:1", "synthetic:-5"])
def test_bad_synthetic_specs_fail_clearly(spec):
    with pytest.raises(ValueError, match="number of training images"):
        open_data(spec)


def test_evaluation_needs_only_the_validation_folder(tmp_path):
    """Evaluating on ImageNet needs val/ alone (train/ is not scanned; its class folders, where
    present, still give the label order, so a val/ missing a class keeps the labels)."""
    root = make_image_folder(tmp_path)
    full = open_data(str(root))
    for_eval = open_data(str(root), for_training=False)
    assert for_eval.class_names == full.class_names and len(for_eval.train_files) == 0
    assert for_eval.val_files.samples == full.val_files.samples
    shutil.rmtree(root / "val" / "class_0")
    assert open_data(str(root), for_training=False).class_names == full.class_names
    shutil.rmtree(root / "train")
    only_val = open_data(str(root), for_training=False)
    assert only_val.class_names == ["class_1", "class_2"] and len(only_val.val_files) == 6
    with pytest.raises(FileNotFoundError, match="train: no such folder"):
        open_data(str(root))


def test_symlinked_folders_are_not_followed_and_are_listed(tmp_path):
    """On 2500fe3 ``ln -s . train/class_0/self`` gave class_0 its images 40 times over and
    ``ln -s .. train/class_0/loop`` gave it every image of the other classes."""
    root = make_image_folder(tmp_path / "data", per_class=4, val_per_class=1)
    class_0 = root / "train" / "class_0"
    (class_0 / "self").symlink_to(".")
    (class_0 / "loop").symlink_to("..")
    (class_0 / "linked.png").symlink_to(root / "train" / "class_1" / "001.png")  # followed
    (class_0 / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "train" / "copy_of_1").symlink_to(root / "train" / "class_1")
    (root / "train" / "from_val").symlink_to(root / "val" / "class_2")
    (root / "train" / "above").symlink_to(root)
    outside = make_image_folder(tmp_path / "elsewhere", per_class=2, val_per_class=1)
    (root / "train" / "class_3").symlink_to(outside / "train" / "class_0")  # a class of links
    (root / "train" / "README").write_text("three colours")
    source = open_data(str(root))
    assert source.class_names == ["class_0", "class_1", "class_2", "class_3"]
    paths = [path for path, _ in source.train_files.samples]
    assert len(paths) == len(set(paths)) == 4 + 1 + 4 + 4 + 2
    assert [path.rsplit("/", 2)[-2] for path, label in source.train_files.samples if label == 0] \
        == ["class_0"] * 5
    assert sorted((item.path.removeprefix(str(root) + "/"), item.reason)
                  for item in source.skipped) == [
        ("train/README", "not in a class folder"),
        ("train/above", "symlink to a folder of the dataset or above it, not followed"),
        ("train/class_0/gone.png", "broken symlink"),
        ("train/class_0/loop", "symlink to a folder, not followed"),
        ("train/class_0/self", "symlink to a folder, not followed"),
        ("train/copy_of_1", "symlink to a folder of the dataset or above it, not followed"),
        ("train/from_val", "symlink to a folder of the dataset or above it, not followed"),
    ]
    with pytest.raises(ValueError, match=r"--strict: 7 bad file\(s\)"):
        open_data(str(root), strict=True)


def _png(path, image, **save):
    image.save(path, **save)
    return str(path)


def test_images_keep_their_range_and_orientation(tmp_path):
    """On 2500fe3 a 16-bit PNG came out 99.6% white (``convert("RGB")`` clips) and a phone
    photo's EXIF orientation was ignored."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 65535, 12 * 8).round().astype(np.uint16).reshape(8, 12)
    expected = np.round(ramp / 257).astype(np.uint8)
    grey16 = Image.frombytes("I;16", (12, 8), ramp.astype("<u2").tobytes())
    for name, image in (("i16", grey16), ("i32", grey16.convert("I"))):
        read = read_image(_png(tmp_path / f"{name}.tif", image))
        assert read.mode == "RGB"
        assert np.array_equal(np.asarray(read)[..., 1], expected), name
    assert np.array_equal(np.asarray(read_image(_png(tmp_path / "g.png", grey16)))[..., 0],
                          expected)
    floats = Image.fromarray((ramp / 65535).astype(np.float32))
    assert floats.mode == "F"
    assert np.abs(np.asarray(read_image(_png(tmp_path / "f.tif", floats)))[..., 2].astype(int)
                  - expected).max() <= 1
    wild = Image.fromarray((ramp * 100.0).astype(np.float32))
    with pytest.raises(ValueError, match="neither 0-1 nor 0-255"):
        read_image(_png(tmp_path / "wild.tif", wild))
    # A grey network reads 16-bit input as the 8-bit grey it stands for.
    prepared = eval_transform(Preprocessing(8, 8, "bilinear", (0.0,), (1.0,)), channels=1)
    eight_bit = _png(tmp_path / "g8.png", Image.fromarray(expected))
    assert torch.equal(prepared(read_image(str(tmp_path / "g.png"))),
                       prepared(read_image(eight_bit)))

    # Transparency is composited onto white, in every mode that carries it.
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    read = np.asarray(read_image(_png(tmp_path / "rgba.png", rgba)))
    assert read[0, 0].tolist() == [10, 20, 30] and read[1, 1].tolist() == [255, 255, 255]
    read = np.asarray(read_image(_png(tmp_path / "la.png", rgba.convert("LA"))))
    assert read[1, 1].tolist() == [255, 255, 255] and read[0, 0, 0] == read[0, 0, 1] < 30
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30, 200, 0, 0])
    palette.putpixel((0, 0), 1)
    read = np.asarray(read_image(_png(tmp_path / "p.png", palette, transparency=0)))
    assert read[0, 0].tolist() == [200, 0, 0] and read[1, 1].tolist() == [255, 255, 255]
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red ink
    assert np.asarray(read_image(_png(tmp_path / "c.tif", cmyk)))[0, 0].tolist() == [255, 0, 0]
    bits = Image.new("1", (4, 4), 1)
    assert np.asarray(read_image(_png(tmp_path / "b.png", bits))).min() == 255

    # EXIF orientation 6: the camera was turned; the stored pixels are rotated back upright.
    upright = Image.new("RGB", (6, 4), (0, 0, 0))
    upright.putpixel((0, 0), (255, 255, 255))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    read = read_image(_png(tmp_path / "phone.png", stored, exif=exif))
    assert read.size == (6, 4) and np.array_equal(np.asarray(read), np.asarray(upright))
