"""ImageNet-layout folders (``PATH/train/CLASS/*.jpg``, ``PATH/val/CLASS/*.jpg``) and the
evaluation transform that a weights config describes.

Augmentation follows the paper (Section 4.1): random-size crop and horizontal flip; evaluation is
a centre crop after resizing the shorter side.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from sknet.data.source import Seeded, Skipped, Source, Transformed
from sknet.errors import UserError
from sknet.preprocessing import PAPER_IMAGENET, Preprocessing

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def read_image(path: str):
    """Decode ``path`` fully as an 8-bit RGB image, upright and with its pixel range kept.

    The one reader of image files (training, evaluation, analysis and ``predict``):

    * EXIF orientation is applied (a phone photo is not fed sideways);
    * 16-bit grey (``I;16``, and ``I`` holding values within 0-65535, as 16-bit PNG and TIFF
      files open) is scaled by its bit depth, ``round(value / 257)``, not clipped to white;
    * floating-point grey (``F``) is read as 0-1 if every value lies there, else as 0-255; values
      outside both ranges are refused (there is no range to read them in);
    * transparency (``RGBA``, ``LA``, ``PA``, a palette or colour with a transparent colour) is
      composited onto white, as Hugging Face's image processors do;
    * every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ...) is converted by Pillow.

    ``load`` catches truncated files that ``open`` accepts; any failure raises (Pillow raises
    many types for damaged files; callers skip or report them).
    """
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    return _to_rgb(image)


HIGH_BIT_DEPTH = 65535
"""The largest 16-bit value: 16-bit images are divided by ``65535 / 255 = 257``."""


def _to_rgb(image):
    """``image`` as 8-bit RGB, its range kept (see :func:`read_image`)."""
    import numpy as np
    from PIL import Image

    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        pixels = np.asarray(image).astype(np.float64)
        low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        if image.mode == "F" and low >= 0 and high <= 1:
            pixels = pixels * 255
        elif image.mode != "F":
            if low < 0 or high > HIGH_BIT_DEPTH:
                raise ValueError(
                    f"{image.mode} pixels from {low:g} to {high:g}: not 16-bit values, no range "
                    "to read them in"
                )
            pixels = pixels / (HIGH_BIT_DEPTH / 255)
        elif low < 0 or high > 255:
            raise ValueError(
                f"floating-point pixels from {low:g} to {high:g}: neither 0-1 nor 0-255, no "
                "range to read them in"
            )
        image = Image.fromarray(np.round(pixels).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


class _Files(Dataset):
    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            return read_image(path), target
        except Exception as error:  # PIL raises many types for damaged files
            return Skipped(path, f"unreadable: {error}")


def _class_folders(split: Path, skipped: list[Skipped] | None = None) -> list[str]:
    """The class sub-folders of ``split``, sorted: the label order.

    A class folder may be a symbolic link (a dataset assembled from links), but not one into the
    dataset's own ``train/`` or ``val/`` or to a folder above ``split`` (its images would be
    counted twice, under another class or split, or in a loop): such links are left out. They,
    and files beside the class folders, are added to ``skipped`` if given.
    """
    names, left_out = [], []
    splits = [(split.parent / name).resolve() for name in ("train", "val")]
    for entry in os.scandir(split):
        if not entry.is_dir():
            left_out.append(Skipped(entry.path, "not in a class folder"))
            continue
        if entry.is_symlink():
            target = Path(entry.path).resolve()
            if split.resolve().is_relative_to(target) or any(
                target.is_relative_to(own) for own in splits
            ):
                left_out.append(Skipped(
                    entry.path, "symlink to a folder of the dataset or above it, not followed"
                ))
                continue
        names.append(entry.name)
    if skipped is not None:
        skipped += sorted(left_out, key=lambda item: item.path)
    return sorted(names)


def _scan_class(folder: Path) -> tuple[list[str], list[Skipped]]:
    """The image files under one class folder, sorted, and what was set aside.

    Symbolic links to files are followed; links to folders are not (one rule that keeps a scan
    inside the class folder's tree and out of cycles): each is listed as skipped. Files
    without an image extension, empty files, broken links and unreadable sub-folders are
    set aside too.
    """
    images: list[str] = []
    skipped: list[Skipped] = []

    def unreadable(error: OSError) -> None:
        skipped.append(Skipped(str(error.filename), f"folder not readable: {error.strerror}"))

    for parent, folders, files in sorted(os.walk(folder, onerror=unreadable)):
        for name in sorted(folders):
            path = os.path.join(parent, name)
            if os.path.islink(path):
                skipped.append(Skipped(path, "symlink to a folder, not followed"))
        for name in sorted(files):
            path = os.path.join(parent, name)
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                skipped.append(Skipped(path, "not an image file"))
                continue
            try:
                size = os.path.getsize(path)  # follows a link to a file
            except OSError as error:
                broken = os.path.islink(path) and isinstance(error, FileNotFoundError)
                skipped.append(Skipped(path, "broken symlink" if broken
                                       else f"not readable: {error.strerror}"))
                continue
            if size == 0:
                skipped.append(Skipped(path, "empty file"))
            else:
                images.append(path)
    return images, skipped


def _scan_split(
    split: Path, class_names: list[str] | None, strict: bool
) -> tuple[list[str], list[tuple[str, int]], list[Skipped]]:
    """Class folders of ``split`` and their image files; what is not an image set aside."""
    if not split.is_dir():
        raise FileNotFoundError(
            f"{split}: no such folder; an image-folder dataset needs {split.parent}/train/ and "
            f"{split.parent}/val/ with one sub-folder of images per class (ImageNet layout)"
        )
    skipped: list[Skipped] = []
    found = _class_folders(split, skipped)
    if not found:
        raise UserError(
            f"{split}: no class sub-folders; put each class's images in {split}/CLASS/"
        )
    if class_names is None:
        class_names = found
    else:
        extra = sorted(set(found) - set(class_names))
        if extra:
            raise UserError(
                f"{split}: class folders {', '.join(extra[:5])} are not in the training split"
            )
    label = {name: index for index, name in enumerate(class_names)}
    samples: list[tuple[str, int]] = []
    for name in found:
        images, left_out = _scan_class(split / name)
        skipped += left_out
        if not images:
            raise UserError(
                f"{split / name}: class folder without images; add images or remove the folder"
            )
        samples += [(path, label[name]) for path in images]
    if strict:
        for path, _ in samples:
            try:
                read_image(path)
            except Exception as error:
                skipped.append(Skipped(path, f"unreadable: {error}"))
        if skipped:
            examples = "; ".join(f"{item.path} ({item.reason})" for item in skipped[:3])
            raise UserError(
                f"--strict: {len(skipped)} bad file(s) in {split}, e.g. {examples}; remove them, "
                "or drop --strict to skip them"
            )
    return class_names, samples, skipped


class FolderSource(Source):
    """An ImageNet-layout folder: ``train/`` and ``val/``, one sub-folder of images per class.

    Files without an image extension, empty files, broken links, links to folders and files
    beside the class folders are set aside up front (see :func:`_scan_class`); files that fail
    to decode are skipped when met (training substitutes the next image). Each is listed in
    ``skipped`` with its reason. With ``strict``, every file is decoded up front and anything
    set aside is an error.
    """

    kind = "imagenet"

    def __init__(self, root: Path, strict: bool = False, for_training: bool = True) -> None:
        if not root.is_dir():
            raise FileNotFoundError(
                f"--data {root}: no such folder; pass `digits` (or `digits:5-9:10`), "
                "`scaled-mnist`, `scaled-digits`, `cifar10:PATH`, `cifar100:PATH` or a folder "
                "with train/ and val/ sub-folders of class folders (ImageNet layout: "
                "get ILSVRC2012 from image-net.org and sort val/ into class folders)"
            )
        self.spec = str(root.resolve())  # recorded with the weights: valid from any folder
        if for_training:
            names, train, skipped_train = _scan_split(root / "train", None, strict)
        else:  # evaluation reads val/ alone; labels follow train/'s class folders where present
            names = _class_folders(root / "train") if (root / "train").is_dir() else None
            train, skipped_train = [], []
        self.class_names, val, skipped_val = _scan_split(root / "val", names, strict)
        self.train_files = _Files(train)
        self.val_files = _Files(val)
        self.skipped = tuple(skipped_train + skipped_val)

    def train_set(self, input_size: int, min_scale: float, preprocessing: Preprocessing) -> Dataset:
        from torchvision import transforms

        interpolation = transforms.InterpolationMode(preprocessing.interpolation)
        return Seeded(self.train_files, transforms.Compose([
            transforms.RandomResizedCrop(
                input_size, scale=(min_scale, 1.0), interpolation=interpolation
            ),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(*preprocessing.unit_normalization()),
        ]))

    def val_set(self, size: int, preprocessing: Preprocessing) -> Dataset:
        return Transformed(self.val_files, eval_transform(preprocessing.at(size)))

    @property
    def train_size(self) -> int:
        return len(self.train_files)

    def preprocessing(self, size: int) -> Preprocessing:
        return PAPER_IMAGENET.at(size)


class _Convert:
    """``image.convert(mode)``, picklable for loader processes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image):
        return image.convert(self.mode)


def eval_transform(
    preprocessing: Preprocessing, channels: int = 3, source: str = "preprocessing"
) -> Callable[[Any], torch.Tensor]:
    """The one evaluation transform: PIL image -> normalised tensor, as ``preprocessing`` says.

    The image is converted to grey (``channels=1``) or RGB, its shorter side resized to
    ``resize`` with ``interpolation``, the centre ``input_size`` square cropped, scaled to [0, 1]
    and normalised (:meth:`~sknet.preprocessing.Preprocessing.unit_normalization`).

    Args:
        preprocessing: the resolved preprocessing.
        channels: the network's input channels, 1 or 3.
        source: where the preprocessing came from, for error messages.

    Raises:
        sknet.errors.UserError: its normalisation does not fit ``channels``.
    """
    from torchvision import transforms

    if channels not in (1, 3):
        raise UserError(f"{source}: images can feed 1 or 3 input channels, not {channels}")
    mean, std = preprocessing.unit_normalization()
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise UserError(
            f"{source}: {len(mean)} means and {len(std)} stds for a {channels}-channel input"
        )
    interpolation = transforms.InterpolationMode(preprocessing.interpolation)
    return transforms.Compose([
        _Convert("L" if channels == 1 else "RGB"),
        transforms.Resize(preprocessing.resize, interpolation=interpolation),
        transforms.CenterCrop(preprocessing.input_size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
