"""scikit-learn's handwritten digits: 1,797 real 8x8 grey images that ship with scikit-learn.

A fixed stratified 80/20 train/val split (1,437 / 360), upsampled to the recipe's input size;
training shifts each digit by up to one original pixel (a mirrored digit is another symbol, so no
flip).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sknet.data.source import Seeded, Source, Tensors, Transformed

DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
"""The digits split is fixed (stratified, seed 0), whatever the training seed: 1,437 / 360."""


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
    """scikit-learn's 1,797 handwritten digits (8x8, values 0-16), split 1,437 train / 360 val."""

    kind = "digits"
    channels = 1
    loader_workers = False

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        targets = torch.tensor(digits.target, dtype=torch.long)
        train_index, val_index = train_test_split(
            range(len(targets)), test_size=DIGITS_VAL_FRACTION,
            random_state=DIGITS_SPLIT_SEED, stratify=digits.target,
        )
        self.spec = "digits"
        self.class_names = [str(name) for name in digits.target_names]
        self.train = Tensors(images[train_index], targets[train_index])
        self.val = Tensors(images[val_index], targets[val_index])
        self.mean = self.train.images.mean().item()
        self.std = self.train.images.std().item()

    def train_set(self, input_size: int, min_scale: float) -> Dataset:
        shift = max(1, input_size // 8)  # one original pixel
        return Seeded(self.train, _DigitsTransform(input_size, self.mean, self.std, shift))

    def val_set(self, size: int, preprocessing: Mapping[str, Any] | None = None) -> Dataset:
        return Transformed(self.val, _DigitsTransform(size, self.mean, self.std))

    def preprocessing(self, size: int) -> dict[str, Any]:
        return {
            "input_size": size, "resize": size, "interpolation": "bilinear",
            "mean": [self.mean], "std": [self.std],
            "note": "8x8 grey digits scaled from 0-16 to [0, 1], upsampled to input_size",
        }

