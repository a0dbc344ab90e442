"""CIFAR-10/100 from a local root in torchvision's format, with ResNeXt's CIFAR augmentation
(pad-4 crop and flip)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from sknet.data.source import Seeded, Source, Transformed, normalization

CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
"""Per-channel mean/std of the CIFAR-10 training set, as in the ResNeXt CIFAR code."""


CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


class CifarSource(Source):
    """CIFAR-10/100 from a local root in torchvision's format (``cifar-10-batches-py/`` ...)."""

    kind = "cifar"

    def __init__(self, name: str, root: Path) -> None:
        from torchvision import datasets

        folder = CIFAR_FOLDERS[name]
        if root.name == folder:
            root = root.parent
        if not (root / folder).is_dir():
            raise FileNotFoundError(
                f"--data {name}:{root}: expected {root / folder}/ (torchvision's format); "
                f"download {CIFAR_ARCHIVES[name]} from https://www.cs.toronto.edu/~kriz/cifar.html "
                f"and extract it into {root}"
            )
        builder = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            self.train = builder(str(root), train=True, download=False)
            self.val = builder(str(root), train=False, download=False)
        except RuntimeError as error:
            raise ValueError(
                f"{root / folder}: incomplete or corrupt CIFAR files ({error}); extract "
                f"{CIFAR_ARCHIVES[name]} again"
            ) from None
        self.spec = f"{name}:{root}"
        self.class_names = list(self.train.classes)

    def _normalize(self, preprocessing: Mapping[str, Any] | None):
        from torchvision import transforms

        mean, std = normalization(preprocessing, CIFAR_MEAN, CIFAR_STD)
        return [transforms.ToTensor(), transforms.Normalize(mean, std)]

    def train_set(
        self, input_size: int, min_scale: float, preprocessing: Mapping[str, Any] | None = None
    ) -> Dataset:
        from torchvision import transforms

        return Seeded(self.train, transforms.Compose([
            transforms.RandomCrop(input_size, padding=4),
            transforms.RandomHorizontalFlip(),
            *self._normalize(preprocessing),
        ]))

    def val_set(self, size: int, preprocessing: Mapping[str, Any] | None = None) -> Dataset:
        from torchvision import transforms

        resize = [] if size == 32 else [transforms.Resize(size)]
        return Transformed(
            self.val, transforms.Compose([*resize, *self._normalize(preprocessing)])
        )

    def preprocessing(self, size: int) -> dict[str, Any]:
        return {
            "input_size": size, "resize": size, "interpolation": "bilinear",
            "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD),
        }

