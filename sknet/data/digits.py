"""scikit-learn's handwritten digits: 1,797 real 8x8 grey images that ship with scikit-learn.

A fixed stratified 80/20 train/val split (1,437 / 360), upsampled to the recipe's input size;
training shifts each digit by up to one original pixel (a mirrored digit is another symbol, so no
flip). ``digits:CLASSES[:N]`` takes some of the digits (``0-4``, ``5,7,9``), relabelled 0..k-1,
and optionally only the first N training images of each (a few-label task for fine-tuning); the
split stays the one fixed split, so the subsets of different specs never share an image across
train and val.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sknet.data.source import SPLIT_SEED, VAL_FRACTION, Seeded, Source, Tensors, Transformed
from sknet.errors import UserError
from sknet.preprocessing import Preprocessing


@dataclass(frozen=True)
class _DigitsTransform:
    """8x8 digit in [0, 1] -> bilinear upsampling to ``size`` -> optional shift -> normalise."""

    size: int
    mean: float
    std: float
    shift: int = 0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = F.interpolate(
            image[None], size=(self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        if self.shift:
            padded = F.pad(image, [self.shift] * 4)
            top, left = torch.randint(0, 2 * self.shift + 1, (2,)).tolist()
            image = padded[:, top : top + self.size, left : left + self.size]
        return (image - self.mean) / self.std


class DigitsSource(Source):
    """scikit-learn's 1,797 handwritten digits (8x8, values 0-16), split 1,437 train / 360 val.

    Args:
        classes: the digits to keep (default all ten), in label order.
        per_class: keep only the first this many training images of each class (default all).
    """

    kind = "digits"
    channels = 1
    loader_workers = False

    def __init__(
        self, classes: Sequence[int] | None = None, per_class: int | None = None
    ) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        targets = torch.tensor(digits.target, dtype=torch.long)
        train_index, val_index = train_test_split(
            range(len(targets)), test_size=VAL_FRACTION, random_state=SPLIT_SEED,
            stratify=digits.target,
        )
        kept = list(range(10)) if classes is None else list(classes)
        self.spec = digits_spec(classes, per_class)
        self.class_names = [str(digit) for digit in kept]
        label = {digit: position for position, digit in enumerate(kept)}
        seen = dict.fromkeys(kept, 0)
        train = []
        for index in train_index:
            digit = int(targets[index])
            if digit in label and (per_class is None or seen[digit] < per_class):
                seen[digit] += 1
                train.append(index)
        val = [index for index in val_index if int(targets[index]) in label]
        relabel = torch.tensor([label.get(digit, -1) for digit in range(10)])
        self.train = Tensors(images[train], relabel[targets[train]])
        self.val = Tensors(images[val], relabel[targets[val]])
        self.mean = self.train.images.mean().item()
        self.std = self.train.images.std().item()

    def train_set(self, input_size: int, min_scale: float, preprocessing: Preprocessing) -> Dataset:
        shift = max(1, input_size // 8)  # one original pixel
        return Seeded(self.train, self._transform(input_size, preprocessing, shift))

    def val_set(self, size: int, preprocessing: Preprocessing) -> Dataset:
        return Transformed(self.val, self._transform(size, preprocessing))

    def _transform(
        self, size: int, preprocessing: Preprocessing, shift: int = 0
    ) -> _DigitsTransform:
        (mean, *_), (std, *_) = preprocessing.unit_normalization()
        return _DigitsTransform(size, mean, std, shift)

    def preprocessing(self, size: int) -> Preprocessing:
        return Preprocessing.square(
            size, [self.mean], [self.std],
            note="8x8 grey digits scaled from 0-16 to [0, 1], upsampled to input_size",
        )



def digits_spec(classes: Sequence[int] | None, per_class: int | None) -> str:
    """The ``--data`` spec of a digits subset: ``digits``, ``digits:0,1,2``, ``digits:5-9:10``."""
    if classes is None and per_class is None:
        return "digits"
    kept = list(range(10)) if classes is None else list(classes)
    consecutive = kept == list(range(kept[0], kept[0] + len(kept)))
    named = f"{kept[0]}-{kept[-1]}" if consecutive and len(kept) > 1 else ",".join(map(str, kept))
    return f"digits:{named}" + ("" if per_class is None else f":{per_class}")


def parse_digits(spec: str) -> DigitsSource:
    """``digits[:CLASSES[:N]]``: the digits ``CLASSES`` (``0-4`` or ``5,7,9``), with at most
    ``N`` training images each."""
    parts = spec.split(":")
    usage = (
        f"--data {spec}: write digits, digits:LOW-HIGH or digits:D,D,.. (the digits to keep), "
        "and optionally :N training images per digit, e.g. digits:5-9:10"
    )
    if len(parts) > 3 or parts[0] != "digits":
        raise UserError(usage)
    classes = per_class = None
    try:
        if len(parts) > 1:
            low, dash, high = parts[1].partition("-")
            if dash:
                classes = list(range(int(low), int(high) + 1))
            else:
                classes = [int(digit) for digit in parts[1].split(",")]
        if len(parts) > 2:
            per_class = int(parts[2])
    except ValueError:
        raise UserError(usage) from None
    if classes is not None and (
        len(classes) < 2 or len(set(classes)) != len(classes) or not set(classes) <= set(range(10))
    ):
        raise UserError(f"{usage}; the digits must be at least two distinct ones of 0-9")
    if per_class is not None and per_class < 1:
        raise UserError(f"{usage}; N must be at least 1")
    return DigitsSource(classes, per_class)
