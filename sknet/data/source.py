"""What every dataset shares: the :class:`Source` interface, seeded per-sample augmentation,
unreadable files carried through the loader, and the resumable batch order of training.

Training samples are addressed by ``(index, seed)`` pairs that :class:`EpochBatches` derives from
``(run seed, epoch, index)``: each sample's augmentation depends on nothing else, so a run resumed
mid-epoch, with any number of loader workers or processes, sees exactly the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from sknet.errors import UserError
from sknet.preprocessing import Preprocessing


@dataclass(frozen=True)
class Skipped:
    """A file left out and why: set aside by a folder scan (not an image, a link to a folder,
    ...) or unreadable when met (carried through the loader to be counted)."""

    path: str
    reason: str


@dataclass(frozen=True)
class Unreadable:
    """What :class:`Seeded` serves when no training image can be read at all: the files it
    tried. :func:`collate` lists them as skipped and serves no image; the training loop then
    stops in the main process (an error raised in a loader worker would reach the user wrapped
    in the worker's traceback)."""

    skipped: tuple[Skipped, ...]


SampleKey = tuple[int, int]
"""A training sample's address: ``(index, augmentation seed)``."""


VAL_FRACTION = 0.2
SPLIT_SEED = 0
"""The in-memory digit datasets keep one fixed stratified train/val split (20% validation, seed
0), whatever the training seed."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch``'s shuffle in a run seeded with ``seed``."""
    return seed * 1_000_003 + epoch


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return (epoch_seed(seed, epoch) * 10_000_019 + index) % (2**63 - 1)


class Source:
    """A dataset named by a ``--data`` spec: its classes, and train/val sets at a given size.

    Attributes:
        spec: the spec it was opened from.
        kind: recipe family: ``"digits"``, ``"scaled"``, ``"imagenet"`` (folders) or
            ``"cifar"``.
        class_names: one name per class, in label order.
        channels: image channels (1 for digits, 3 otherwise).
        skipped: files left out up front (not images, empty), as :class:`Skipped`.
        loader_workers: whether data-loader processes speed it up (``False`` for images
            already in memory as tensors, which the main process serves faster).
    """

    spec: str
    kind: str
    class_names: list[str]
    channels: int = 3
    skipped: tuple[Skipped, ...] = ()
    loader_workers: bool = True
    native_size: int | None = None
    """The input size the data is drawn at, if it has one (the default ``--input-size``)."""
    val_sizes: torch.Tensor | None = None
    """``[N, 2]`` height and width of each validation image's object, where the data records
    them (the scaled digits), in validation order."""
    val_boxes: torch.Tensor | None = None
    """``[N, 4]`` inclusive ``(top, bottom, left, right)`` pixel box of each validation image's
    object, where the data records it (the scaled digits), in validation order."""
    val_size_grid: list[int] | None = None
    """The heights the validation objects were drawn at, where there are a few (bins follow
    them)."""

    def train_set(self, input_size: int, min_scale: float, preprocessing: Preprocessing) -> Dataset:
        """Augmented training images, indexed by :data:`SampleKey`, normalised (and for image
        files resampled) as the resolved ``preprocessing`` says
        (:func:`~sknet.preprocessing.resolve_preprocessing`)."""
        raise NotImplementedError

    def val_set(self, size: int, preprocessing: Preprocessing) -> Dataset:
        """Validation images prepared for evaluation at ``size`` (items may be :class:`Skipped`).

        ``preprocessing`` is the resolved one. Datasets of image files follow all of it
        (:func:`~sknet.data.folders.eval_transform` of ``preprocessing.at(size)``); digits and
        CIFAR, held in memory at their own size, follow its normalisation; synthetic images are
        generated normalised.
        """
        raise NotImplementedError

    def preprocessing(self, size: int) -> Preprocessing:
        """The dataset's own preprocessing at ``size``: the default that the weights' record and
        the user's overrides layer over, and what a user must do to an image before the network
        sees it."""
        raise NotImplementedError

    @property
    def train_size(self) -> int:
        """Training images (before augmentation): those of ``self.train`` where a source holds
        them there."""
        return len(self.train)


class Transformed(Dataset):
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


class Seeded(Transformed):
    """``transform(base[index])`` under a torch RNG seeded with the key's seed.

    An unreadable file is replaced by the next readable sample (so that every batch keeps its size
    on every process) and reported with the item; when none can be read, it serves
    :class:`Unreadable`.
    """

    def __getitem__(
        self, key: SampleKey
    ) -> tuple[torch.Tensor, int, tuple[Skipped, ...]] | Unreadable:
        index, seed = key
        skipped: list[Skipped] = []
        for offset in range(len(self)):
            item = self.base[(index + offset) % len(self)]
            if not isinstance(item, Skipped):
                break
            skipped.append(item)
        else:
            return Unreadable(tuple(skipped))
        image, target = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), target, tuple(skipped)


def collate(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, list[Skipped]]:
    """Stack a batch into ``(images, targets, skipped)``, dropping and listing unreadable files
    (no image at all when nothing could be read: see :class:`Unreadable`)."""
    skipped: list[Skipped] = []
    images, targets = [], []
    for item in batch:
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        if isinstance(item, Unreadable):
            skipped.extend(item.skipped)
            continue
        if len(item) == 3:
            skipped.extend(item[2])
        images.append(item[0])
        targets.append(item[1])
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    return torch.stack(images), torch.as_tensor(targets, dtype=torch.long), skipped


@dataclass(eq=False)
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

    size: int
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    epoch: int = field(default=0, init=False)
    start: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.batch_size % self.world_size:
            raise UserError(
                f"batch size {self.batch_size} is not divisible by the {self.world_size} processes"
            )
        if self.size < self.batch_size:
            raise UserError(
                f"the training set has {self.size} images, fewer than one batch of "
                f"{self.batch_size}; lower --batch-size"
            )

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
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        share = self.batch_size // self.world_size
        for step in range(self.start, self.steps_per_epoch):
            first = step * self.batch_size + self.rank * share
            yield [
                (index, sample_seed(self.seed, self.epoch, index))
                for index in order[first : first + share]
            ]


class Tensors(Dataset):
    """Images (one tensor, or a list of tensors of different shapes) and their targets."""

    def __init__(
        self, images: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor
    ) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

