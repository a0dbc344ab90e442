"""ImageNet-layout folders (``PATH/train/CLASS/*.jpg``, ``PATH/val/CLASS/*.jpg``) and the
evaluation transform that a weights config describes.

Augmentation follows the paper (Section 4.1): random-size crop and horizontal flip; evaluation is
a centre crop after resizing the shorter side.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from sknet.data.source import Seeded, Skipped, Source, Transformed, normalization

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CROP_FRACTION = 0.875
"""Evaluation resizes the shorter side to ``size / 0.875`` and takes the centre ``size`` crop."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (1 / 255, 1 / 255, 1 / 255)
"""The paper normalises by mean channel subtraction only (Section 4.1): on 0-255 pixels, as Caffe
does, which is ``(x - mean) / (1/255)`` for torchvision's [0, 1] tensors."""


def read_image(path: str):
    """Decode ``path`` fully as RGB (``load`` catches truncated files that ``open`` accepts)."""
    from PIL import Image

    with Image.open(path) as image:
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


def _class_folders(split: Path) -> list[str]:
    """The class sub-folders of ``split``, sorted: the label order."""
    return sorted(entry.name for entry in os.scandir(split) if entry.is_dir())


def _scan_split(
    split: Path, class_names: list[str] | None, strict: bool
) -> tuple[list[str], list[tuple[str, int]], list[Skipped]]:
    """Class folders of ``split`` and their image files; non-images and empty files set aside."""
    if not split.is_dir():
        raise FileNotFoundError(
            f"{split}: no such folder; an image-folder dataset needs {split.parent}/train/ and "
            f"{split.parent}/val/ with one sub-folder of images per class (ImageNet layout)"
        )
    found = _class_folders(split)
    if not found:
        raise ValueError(
            f"{split}: no class sub-folders; put each class's images in {split}/CLASS/"
        )
    if class_names is None:
        class_names = found
    else:
        extra = sorted(set(found) - set(class_names))
        if extra:
            raise ValueError(
                f"{split}: class folders {', '.join(extra[:5])} are not in the training split"
            )
    label = {name: index for index, name in enumerate(class_names)}
    samples: list[tuple[str, int]] = []
    skipped: list[Skipped] = []
    for name in found:
        count = 0
        for folder, _, files in sorted(os.walk(split / name, followlinks=True)):
            for file in sorted(files):
                path = os.path.join(folder, file)
                if not file.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append(Skipped(path, "not an image file"))
                elif os.path.getsize(path) == 0:
                    skipped.append(Skipped(path, "empty file"))
                else:
                    samples.append((path, label[name]))
                    count += 1
        if count == 0:
            raise ValueError(
                f"{split / name}: class folder without images; add images or remove the folder"
            )
    if strict:
        for path, _ in samples:
            try:
                read_image(path)
            except Exception as error:
                skipped.append(Skipped(path, f"unreadable: {error}"))
        if skipped:
            examples = "; ".join(f"{item.path} ({item.reason})" for item in skipped[:3])
            raise ValueError(
                f"--strict: {len(skipped)} bad file(s) in {split}, e.g. {examples}; remove them, "
                "or drop --strict to skip them"
            )
    return class_names, samples, skipped


class FolderSource(Source):
    """An ImageNet-layout folder: ``train/`` and ``val/``, one sub-folder of images per class.

    Files without an image extension and empty files are set aside up front; files that fail to
    decode are skipped when met (training substitutes the next image). With ``strict``, every file
    is decoded up front and any bad one is an error.
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
        self.spec = str(root)
        if for_training:
            names, train, skipped_train = _scan_split(root / "train", None, strict)
        else:  # evaluation reads val/ alone; labels follow train/'s class folders where present
            names = _class_folders(root / "train") if (root / "train").is_dir() else None
            train, skipped_train = [], []
        self.class_names, val, skipped_val = _scan_split(root / "val", names, strict)
        self.train_files = _Files(train)
        self.val_files = _Files(val)
        self.skipped = tuple(skipped_train + skipped_val)

    def train_set(
        self, input_size: int, min_scale: float, preprocessing: Mapping[str, Any] | None = None
    ) -> Dataset:
        from torchvision import transforms

        mean, std = normalization(preprocessing, IMAGENET_MEAN, IMAGENET_STD)
        interpolation = _interpolation(preprocessing or {}, "training")
        return Seeded(self.train_files, transforms.Compose([
            transforms.RandomResizedCrop(
                input_size, scale=(min_scale, 1.0), interpolation=interpolation
            ),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]))

    def val_set(self, size: int, preprocessing: Mapping[str, Any] | None = None) -> Dataset:
        chosen = self.preprocessing(size) if preprocessing is None else preprocessing
        return Transformed(self.val_files, eval_transform(preprocessing_at(chosen, size)))

    @property
    def train_size(self) -> int:
        return len(self.train_files)

    def preprocessing(self, size: int) -> dict[str, Any]:
        return {
            "input_size": size, "resize": round(size / CROP_FRACTION), "interpolation": "bilinear",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        }


class _Convert:
    """``image.convert(mode)``, picklable for loader processes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image):
        return image.convert(self.mode)


def _interpolation(preprocessing: Mapping[str, Any], source: str) -> Any:
    """The torchvision interpolation mode a preprocessing config names (default bilinear)."""
    from torchvision import transforms

    name = preprocessing.get("interpolation", "bilinear")
    try:
        return transforms.InterpolationMode(name)
    except ValueError:
        raise ValueError(
            f"{source}: unknown interpolation {name!r} in the preprocessing config"
        ) from None


def preprocessing_at(preprocessing: Mapping[str, Any], size: int) -> dict[str, Any]:
    """``preprocessing`` for a centre crop of ``size``, keeping its resize-to-crop ratio."""
    crop = int(preprocessing.get("input_size", size))
    resize = int(preprocessing.get("resize", crop))
    return {**preprocessing, "input_size": size, "resize": round(size * resize / crop)}


def eval_transform(
    preprocessing: Mapping[str, Any], channels: int = 3, source: str = "preprocessing"
) -> Callable[[Any], torch.Tensor]:
    """The evaluation transform a weights config describes: PIL image -> normalised tensor.

    The image is converted to grey (``channels=1``) or RGB, its shorter side resized to
    ``resize`` (default ``input_size``) with ``interpolation`` (default bilinear), the centre
    ``input_size`` square cropped, scaled to [0, 1] and normalised by ``mean``/``std``.

    Args:
        preprocessing: a config's ``preprocessing`` (:meth:`Source.preprocessing`).
        channels: the network's input channels, 1 or 3.
        source: where the config came from, for error messages.

    Raises:
        ValueError: the config lacks ``input_size``, ``mean`` or ``std``, or does not fit
            ``channels``.
    """
    from torchvision import transforms

    missing = [key for key in ("input_size", "mean", "std") if key not in preprocessing]
    if missing:
        raise ValueError(
            f"{source}: the preprocessing config lacks {', '.join(missing)}; use weights saved "
            "with their preprocessing (a run's best.safetensors, or sknet.save_pretrained(..., "
            "preprocessing=...))"
        )
    if channels not in (1, 3):
        raise ValueError(f"{source}: images can feed 1 or 3 input channels, not {channels}")
    mean, std = list(preprocessing["mean"]), list(preprocessing["std"])
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ValueError(
            f"{source}: {len(mean)} means and {len(std)} stds for a {channels}-channel input"
        )
    size = int(preprocessing["input_size"])
    interpolation = _interpolation(preprocessing, source)
    return transforms.Compose([
        _Convert("L" if channels == 1 else "RGB"),
        transforms.Resize(int(preprocessing.get("resize", size)), interpolation=interpolation),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
