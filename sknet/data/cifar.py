"""CIFAR-10/100 from a local root in torchvision's format, with ResNeXt's CIFAR augmentation
(pad-4 crop and flip)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from sknet.data.source import Seeded, Source, Transformed
from sknet.errors import UserError
from sknet.preprocessing import CIFAR, Preprocessing

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
            raise UserError(
                f"{root / folder}: incomplete or corrupt CIFAR files ({error}); extract "
                f"{CIFAR_ARCHIVES[name]} again"
            ) from None
        self.spec = f"{name}:{root.resolve()}"  # recorded with the weights: valid from anywhere
        self.class_names = list(self.train.classes)

    def _normalize(self, preprocessing: Preprocessing):
        from torchvision import transforms

        return [transforms.ToTensor(), transforms.Normalize(*preprocessing.unit_normalization())]

    def train_set(self, input_size: int, min_scale: float, preprocessing: Preprocessing) -> Dataset:
        from torchvision import transforms

        return Seeded(self.train, transforms.Compose([
            transforms.RandomCrop(input_size, padding=4),
            transforms.RandomHorizontalFlip(),
            *self._normalize(preprocessing),
        ]))

    def val_set(self, size: int, preprocessing: Preprocessing) -> Dataset:
        from torchvision import transforms

        resize = [] if size == 32 else [transforms.Resize(size)]
        return Transformed(
            self.val, transforms.Compose([*resize, *self._normalize(preprocessing)])
        )

    def preprocessing(self, size: int) -> Preprocessing:
        return CIFAR.at(size)
