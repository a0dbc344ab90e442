"""Datasets for training and evaluation: one ``--data`` spec in, train and validation sets out.

Specs (:func:`open_data`):

* ``digits``: scikit-learn's ``load_digits`` (1,797 real 8x8 grey images, shipped with
  scikit-learn), a fixed stratified 80/20 train/val split, upsampled to the recipe's input size.
* ``PATH``: an ImageNet-layout folder, ``PATH/train/CLASS/*.jpg`` and ``PATH/val/CLASS/*.jpg``.
* ``cifar10:PATH`` / ``cifar100:PATH``: CIFAR in torchvision's format under ``PATH``.
* ``synthetic`` / ``synthetic:N``: ``N`` (default 12,800) generated ImageNet-size training images
  of 1,000 classes (and N/10 validation images), for speed and memory measurements with the
  ImageNet recipe when no dataset is at hand (see :class:`SyntheticSource`).

Nothing is ever downloaded. Augmentation follows the paper (Section 4.1): random-size crop and
horizontal flip for ImageNet, evaluation by a centre crop; pad-4 crop and flip for CIFAR (the
ResNeXt CIFAR recipe); a shift of up to one original pixel for digits (a mirrored digit is another
symbol, so no flip).

Training samples are addressed by ``(index, seed)`` pairs that :class:`EpochBatches` derives from
``(run seed, epoch, index)``: each sample's augmentation depends on nothing else, so a run resumed
mid-epoch, with any number of loader workers or processes, sees exactly the same images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CROP_FRACTION = 0.875
"""Evaluation resizes the shorter side to ``size / 0.875`` and takes the centre ``size`` crop."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (1 / 255, 1 / 255, 1 / 255)
"""The paper normalises by mean channel subtraction only (Section 4.1): on 0-255 pixels, as Caffe
does, which is ``(x - mean) / (1/255)`` for torchvision's [0, 1] tensors."""

CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
"""Per-channel mean/std of the CIFAR-10 training set, as in the ResNeXt CIFAR code."""

SYNTHETIC_IMAGES = 12_800
"""Training images of ``--data synthetic`` (50 steps of batch 256 per epoch)."""

DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
"""The digits split is fixed (stratified, seed 0), whatever the training seed: 1,437 / 360."""


@dataclass(frozen=True)
class Skipped:
    """A sample whose file could not be read; carried through the loader to be counted."""

    path: str
    reason: str


SampleKey = tuple[int, int]
"""A training sample's address: ``(index, augmentation seed)``."""


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63 - 1)


class Source:
    """A dataset named by a ``--data`` spec: its classes, and train/val sets at a given size.

    Attributes:
        spec: the spec it was opened from.
        kind: recipe family: ``"digits"``, ``"imagenet"`` (folders) or ``"cifar"``.
        class_names: one name per class, in label order.
        channels: image channels (1 for digits, 3 otherwise).
        skipped: files left out up front (not images, empty), as :class:`Skipped`.
    """

    spec: str
    kind: str
    class_names: list[str]
    channels: int = 3
    skipped: tuple[Skipped, ...] = ()

    def train_set(self, input_size: int, min_scale: float) -> Dataset:
        """Augmented training images, indexed by :data:`SampleKey`."""
        raise NotImplementedError

    def val_set(self, size: int, preprocessing: Mapping[str, Any] | None = None) -> Dataset:
        """Validation images prepared for evaluation at ``size`` (items may be :class:`Skipped`).

        ``preprocessing``: the evaluated weights' recorded preprocessing (e.g. imported timm
        weights: bicubic, mean/std), followed where the dataset holds image files; its resize
        ratio is kept at other sizes (:func:`preprocessing_at`). Default: the dataset's own.
        In-memory datasets (digits, CIFAR, synthetic) always use their own.
        """
        raise NotImplementedError

    def preprocessing(self, size: int) -> dict[str, Any]:
        """What a user must do to an image before the network sees it (saved with the weights)."""
        raise NotImplementedError


class _Seeded(Dataset):
    """``transform(base[index])`` under a torch RNG seeded with the key's seed.

    An unreadable file is replaced by the next readable sample (so that every batch keeps its size
    on every process) and reported with the item.
    """

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, int, tuple[Skipped, ...]]:
        index, seed = key
        skipped: list[Skipped] = []
        for offset in range(len(self)):
            item = self.base[(index + offset) % len(self)]
            if not isinstance(item, Skipped):
                break
            skipped.append(item)
        else:
            raise ValueError("no training image can be read; see the skipped files above")
        image, target = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), target, tuple(skipped)


class _Transformed(Dataset):
    """``transform(base[index])``; :class:`Skipped` items pass through to be counted."""

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | Skipped:
        item = self.base[index]
        if isinstance(item, Skipped):
            return item
        image, target = item
        return self.transform(image), target


def collate(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, list[Skipped]]:
    """Stack a batch into ``(images, targets, skipped)``, dropping and listing unreadable files."""
    skipped: list[Skipped] = []
    images, targets = [], []
    for item in batch:
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        if len(item) == 3:
            skipped.extend(item[2])
        images.append(item[0])
        targets.append(item[1])
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    return torch.stack(images), torch.as_tensor(targets, dtype=torch.long), skipped


class EpochBatches(Sampler[list[SampleKey]]):
    """Training batches: a seeded shuffle per epoch, split across processes, resumable mid-epoch.

    Global batch ``b`` of an epoch is ``order[b*G:(b+1)*G]`` of a permutation seeded by
    ``(seed, epoch)``; process ``rank`` takes its ``G / world_size`` consecutive share, so one
    process and N processes see the same global batches. The last incomplete global batch is
    dropped (SK's fuse BatchNorm needs at least two samples).

    Args:
        size: number of training samples.
        batch_size: global batch size G (divisible by ``world_size``).
        seed: run seed.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} is not divisible by the {world_size} processes"
            )
        if size < batch_size:
            raise ValueError(
                f"the training set has {size} images, fewer than one batch of {batch_size}; "
                "lower --batch-size"
            )
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Serve ``epoch``, beginning at its batch ``start`` (when resuming mid-epoch)."""
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start

    def __iter__(self) -> Iterator[list[SampleKey]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        share = self.batch_size // self.world_size
        for step in range(self.start, self.steps_per_epoch):
            first = step * self.batch_size + self.rank * share
            yield [
                (index, sample_seed(self.seed, self.epoch, index))
                for index in order[first : first + share]
            ]


# ---------------------------------------------------------------------------------------------
# digits


class _Tensors(Dataset):
    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])


class _DigitsTransform:
    """8x8 digit in [0, 1] -> bilinear upsampling to ``size`` -> optional shift -> normalise."""

    def __init__(self, size: int, mean: float, std: float, shift: int = 0) -> None:
        self.size = size
        self.mean = mean
        self.std = std
        self.shift = shift

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
        self.train = _Tensors(images[train_index], targets[train_index])
        self.val = _Tensors(images[val_index], targets[val_index])
        self.mean = self.train.images.mean().item()
        self.std = self.train.images.std().item()

    def train_set(self, input_size: int, min_scale: float) -> Dataset:
        shift = max(1, input_size // 8)  # one original pixel
        return _Seeded(self.train, _DigitsTransform(input_size, self.mean, self.std, shift))

    def val_set(self, size: int, preprocessing: Mapping[str, Any] | None = None) -> Dataset:
        return _Transformed(self.val, _DigitsTransform(size, self.mean, self.std))

    def preprocessing(self, size: int) -> dict[str, Any]:
        return {
            "input_size": size, "resize": size, "interpolation": "bilinear",
            "mean": [self.mean], "std": [self.std],
            "note": "8x8 grey digits scaled from 0-16 to [0, 1], upsampled to input_size",
        }


# ---------------------------------------------------------------------------------------------
# synthetic


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

    def train_set(self, input_size: int, min_scale: float) -> Dataset:
        from torchvision import transforms

        images = _SyntheticImages(self.train_images, 0, input_size, self.classes)
        return _Seeded(images, transforms.RandomHorizontalFlip())

    def val_set(self, size: int, preprocessing: Mapping[str, Any] | None = None) -> Dataset:
        images = _SyntheticImages(self.val_images, self.train_images, size, self.classes)
        return _Transformed(images, torch.nn.Identity())

    def preprocessing(self, size: int) -> dict[str, Any]:
        return {
            "input_size": size, "resize": size, "interpolation": "bilinear",
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
            "note": "synthetic images, generated already normalised",
        }


# ---------------------------------------------------------------------------------------------
# ImageNet-layout folders


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
                f"--data {root}: no such folder; pass `digits`, `cifar10:PATH`, `cifar100:PATH` "
                "or a folder with train/ and val/ sub-folders of class folders (ImageNet layout: "
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

    def train_set(self, input_size: int, min_scale: float) -> Dataset:
        from torchvision import transforms

        return _Seeded(self.train_files, transforms.Compose([
            transforms.RandomResizedCrop(input_size, scale=(min_scale, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]))

    def val_set(self, size: int, preprocessing: Mapping[str, Any] | None = None) -> Dataset:
        chosen = self.preprocessing(size) if preprocessing is None else preprocessing
        return _Transformed(self.val_files, eval_transform(preprocessing_at(chosen, size)))

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
    name = preprocessing.get("interpolation", "bilinear")
    try:
        interpolation = transforms.InterpolationMode(name)
    except ValueError:
        raise ValueError(
            f"{source}: unknown interpolation {name!r} in the preprocessing config"
        ) from None
    return transforms.Compose([
        _Convert("L" if channels == 1 else "RGB"),
        transforms.Resize(int(preprocessing.get("resize", size)), interpolation=interpolation),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


# ---------------------------------------------------------------------------------------------
# CIFAR


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

    def _normalize(self):
        from torchvision import transforms

        return [transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)]

    def train_set(self, input_size: int, min_scale: float) -> Dataset:
        from torchvision import transforms

        return _Seeded(self.train, transforms.Compose([
            transforms.RandomCrop(input_size, padding=4),
            transforms.RandomHorizontalFlip(),
            *self._normalize(),
        ]))

    def val_set(self, size: int, preprocessing: Mapping[str, Any] | None = None) -> Dataset:
        from torchvision import transforms

        resize = [] if size == 32 else [transforms.Resize(size)]
        return _Transformed(self.val, transforms.Compose([*resize, *self._normalize()]))

    def preprocessing(self, size: int) -> dict[str, Any]:
        return {
            "input_size": size, "resize": size, "interpolation": "bilinear",
            "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD),
        }


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
    if spec == "digits":
        return DigitsSource()
    name, separator, path = spec.partition(":")
    if name == "synthetic":
        count = path or str(SYNTHETIC_IMAGES)
        if not count.isdigit() or int(count) < 2:
            raise ValueError(
                f"--data {spec}: give the number of training images, e.g. synthetic:12800"
            )
        return SyntheticSource(int(count))
    if separator and name in CIFAR_FOLDERS:
        if not path:
            raise ValueError(f"--data {spec}: give the CIFAR root, e.g. {name}:data/cifar")
        return CifarSource(name, Path(path).expanduser())
    return FolderSource(Path(spec).expanduser(), strict=strict, for_training=for_training)

