"""Generated ImageNet-size images of 1,000 classes, for speed and memory runs without a dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sknet.data.source import Seeded, Source, Transformed
from sknet.preprocessing import Preprocessing

SYNTHETIC_IMAGES = 12_800
"""Training images of ``--data synthetic`` (50 steps of batch 256 per epoch)."""


class _SyntheticImages(Dataset):
    """Image ``i`` of class ``i % classes``: its class's smooth pattern plus per-image noise.

    Each class's pattern is a random 4x4 colour grid, bilinearly upsampled; the noise has the
    same scale, so the task is learnable but not trivial. Both depend only on the index.
    """

    def __init__(self, count: int, first: int, size: int, classes: int) -> None:
        self.count, self.first, self.size, self.classes = count, first, size, classes

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        number = self.first + index
        target = number % self.classes
        class_seed, image_seed = 2**40 + target, number  # disjoint seed ranges
        grid = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(class_seed))
        pattern = F.interpolate(grid[None], size=(self.size, self.size), mode="bilinear")[0]
        generator = torch.Generator().manual_seed(image_seed)
        noise = torch.randn(3, self.size, self.size, generator=generator)
        return pattern + noise, target


class SyntheticSource(Source):
    """Generated images of 1,000 classes at ImageNet size, trained with the ImageNet recipe.

    For measuring speed and memory (e.g. ``sknet50`` on a GPU) without a dataset: images are made
    on the fly from their index, already normalised, at the requested size. Training flips them.
    """

    kind = "imagenet"
    classes = 1000

    def __init__(self, train_images: int) -> None:
        self.spec = f"synthetic:{train_images}"
        self.train_images = train_images
        self.val_images = max(1, train_images // 10)
        self.class_names = [f"class {index}" for index in range(self.classes)]

    def train_set(self, input_size: int, min_scale: float, preprocessing: Preprocessing) -> Dataset:
        from torchvision import transforms

        images = _SyntheticImages(self.train_images, 0, input_size, self.classes)
        return Seeded(images, transforms.RandomHorizontalFlip())

    def val_set(self, size: int, preprocessing: Preprocessing) -> Dataset:
        images = _SyntheticImages(self.val_images, self.train_images, size, self.classes)
        return Transformed(images, torch.nn.Identity())

    @property
    def train_size(self) -> int:
        return self.train_images

    def preprocessing(self, size: int) -> Preprocessing:
        return Preprocessing.square(
            size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
            note="synthetic images, generated already normalised",
        )

