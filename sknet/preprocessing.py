"""How an image becomes a network's input: one dataclass, its defaults, and the one resolver.

A :class:`Preprocessing` says what evaluation does to an image (Section 4.1: resize the shorter
side, centre-crop, normalise) and what training normalises by. Every consumer (training, ``eval``,
``analyze``, ``predict``, ``export``, fine-tuning) gets it from :func:`resolve_preprocessing`:
the dataset's default, under the weights' record, under the user's overrides. The pixel scale is
explicit: the paper subtracts per-channel means from 0-255 pixels (Caffe's convention), which is
``pixel_scale=255`` with those means and a std of 1, not a std of 1/255 on [0, 1] pixels.

Nothing here imports from sknet but its error type: the models (their registry entries and
records) and the datasets both read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sknet.errors import UserError

INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
"""The resampling filters a resize may name (torchvision's ``InterpolationMode`` values)."""

CROP_FRACTION = 0.875
"""Evaluation resizes the shorter side to ``size / 0.875`` and takes the centre ``size`` crop."""

MAX_INPUT_SIZE = 8192
"""The largest input side a record or an override may ask for (a guard against typos that would
allocate terabytes)."""

MIN_INPUT_SIZE = 8
"""The smallest input side a network is trained, evaluated or exported at (``--input-size``,
``--eval-sizes``, ``sknet eval --sizes``, ``sknet export --input-size``)."""

OVERRIDABLE = ("resize", "interpolation", "mean", "std", "pixel_scale")
"""What ``--preprocessing`` may set (the input size has its own flag, ``--input-size``)."""


class PreprocessingError(UserError):
    """A preprocessing record or override that cannot describe an input (one line)."""


def check_size(size: object, what: str) -> int:
    """``size`` if it is an input side a network can be fed at, from :data:`MIN_INPUT_SIZE` to
    :data:`MAX_INPUT_SIZE`; else a one-line error naming ``what`` (e.g. ``--input-size``)."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise PreprocessingError(f"{what} must be an integer number of pixels, got {size!r}")
    if not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise PreprocessingError(
            f"{what} must be in {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} pixels, got {size}"
        )
    return size


@dataclass(frozen=True)
class Preprocessing:
    """What is done to an image before the network sees it.

    The network input is ``(pixel * pixel_scale - mean) / std`` per channel, with ``pixel`` in
    [0, 1] after the shorter side was resized to ``resize`` (with ``interpolation``) and the centre
    ``input_size`` square cropped. One ``mean``/``std`` value serves every channel.

    Attributes:
        input_size: side of the square the network sees.
        resize: shorter side before the centre crop (``input_size`` itself: no margin).
        interpolation: resampling filter of the resize (:data:`INTERPOLATIONS`).
        mean: per-channel mean subtracted, in the units of ``pixel * pixel_scale``.
        std: per-channel divisor, in the same units.
        pixel_scale: what a white pixel is worth: 1 for [0, 1] inputs, 255 for the paper's
            (Caffe's) 0-255 mean subtraction.
        note: a remark for people (e.g. how digits are scaled before this).
    """

    input_size: int
    resize: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    pixel_scale: float = 1.0
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("input_size", "resize"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PreprocessingError(f"{name} must be an integer, got {value!r}")
            if not 1 <= value <= MAX_INPUT_SIZE:
                raise PreprocessingError(f"{name} must be in 1..{MAX_INPUT_SIZE}, got {value}")
        if self.resize < self.input_size:
            raise PreprocessingError(
                f"resize {self.resize} is smaller than the crop input_size {self.input_size}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessingError(
                f"unknown interpolation {self.interpolation!r}; use one of "
                f"{', '.join(INTERPOLATIONS)}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, 3) or not all(_is_number(v) for v in values):
                raise PreprocessingError(
                    f"{name} must be 1 or 3 numbers (one per channel), got {list(values)!r}"
                )
        if not all(value > 0 for value in self.std):
            raise PreprocessingError(f"std must be positive, got {list(self.std)!r}")
        if not (_is_number(self.pixel_scale) and self.pixel_scale > 0):
            raise PreprocessingError(f"pixel_scale must be positive, got {self.pixel_scale!r}")

    @classmethod
    def square(cls, size: int, mean: Sequence[float], std: Sequence[float], **rest: Any):
        """Inputs already ``size`` pixels square (no margin to crop): digits, CIFAR."""
        return cls(size, size, mean=tuple(mean), std=tuple(std), **rest)

    def at(self, size: int) -> Preprocessing:
        """The same preprocessing for a centre crop of ``size``, keeping the resize-to-crop
        ratio (224 with resize 256 becomes 320 with resize 366)."""
        if size == self.input_size:
            return self
        return replace(self, input_size=size, resize=round(size * self.resize / self.input_size))

    def for_channels(self, channels: int) -> Preprocessing:
        """For a network adapted to ``channels`` inputs: colour weights read grey images exactly
        when every channel is normalised alike, so a grey input takes the channels' averages."""
        if channels != 1 or len(self.mean) == len(self.std) == 1:
            return self
        return replace(
            self, mean=(sum(self.mean) / len(self.mean),), std=(sum(self.std) / len(self.std),)
        )

    def unit_normalization(self) -> tuple[list[float], list[float]]:
        """``(mean, std)`` for pixels in [0, 1] (torchvision's ``Normalize`` after
        ``ToTensor``): the same map as ``(pixel * pixel_scale - mean) / std``."""
        if self.pixel_scale == 1:
            return list(self.mean), list(self.std)
        return (
            [value / self.pixel_scale for value in self.mean],
            [value / self.pixel_scale for value in self.std],
        )

    def to_json(self) -> dict[str, Any]:
        """The record's ``preprocessing`` entry."""
        values = asdict(self)
        values["mean"], values["std"] = list(self.mean), list(self.std)
        if not self.note:
            del values["note"]
        return values

    @classmethod
    def from_json(cls, values: Any, where: str) -> Preprocessing | None:
        """Read a record's ``preprocessing``; ``None`` where it records too little to feed a
        network (no ``input_size``, ``mean`` or ``std``: e.g. weights saved without it).

        Raises:
            PreprocessingError: values of the wrong type or out of range, naming ``where``.
        """
        if values is None:
            return None
        if not isinstance(values, Mapping):
            raise PreprocessingError(f"{where}: preprocessing must be a mapping, got {values!r}")
        if not {"input_size", "mean", "std"} <= set(values):
            return None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PreprocessingError(
                f"{where}: unknown preprocessing key(s) {', '.join(map(str, unknown))}; known: "
                f"{', '.join(sorted(known))}"
            )
        try:
            return _build({**values, "resize": values.get("resize", values["input_size"])})
        except PreprocessingError as error:
            raise PreprocessingError(f"{where}: {error}") from None


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )


def _build(values: Mapping[str, Any]) -> Preprocessing:
    """A :class:`Preprocessing` from plain values (lists for ``mean``/``std``)."""
    values = dict(values)
    for name in ("mean", "std"):
        value = values.get(name)
        if isinstance(value, (list, tuple)):
            values[name] = tuple(value)
        elif value is not None:
            raise PreprocessingError(f"{name} must be a list of numbers, got {value!r}")
    note = values.get("note", "")
    if not isinstance(note, str):
        raise PreprocessingError(f"note must be text, got {note!r}")
    return Preprocessing(**values)


def resolve_preprocessing(
    dataset: Preprocessing,
    weights: Preprocessing | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    size: int | None = None,
    channels: int | None = None,
) -> Preprocessing:
    """The preprocessing to use: the dataset's default < the weights' record < ``overrides``.

    Args:
        dataset: the dataset's own (:meth:`sknet.data.Source.preprocessing`).
        weights: the record of the weights being trained on or evaluated, if any.
        overrides: the user's (``--preprocessing``): keys of :data:`OVERRIDABLE`.
        size: the input size to use (default: the winning layer's); the result keeps that
            layer's resize-to-crop ratio (:meth:`Preprocessing.at`).
        channels: the network's input channels (a colour record read by a grey network takes the
            channels' averages, :meth:`Preprocessing.for_channels`).

    Raises:
        PreprocessingError: an unknown override key or a value out of range.
    """
    chosen = dataset if weights is None else weights
    if channels is not None:
        chosen = chosen.for_channels(channels)
    overrides = dict(overrides or {})
    unknown = sorted(set(map(str, overrides)) - set(OVERRIDABLE))
    if unknown:
        raise PreprocessingError(
            f"--preprocessing: unknown key(s) {', '.join(unknown)}; it sets "
            f"{', '.join(OVERRIDABLE)} (the size is --input-size)"
        )
    if overrides:
        try:
            chosen = _build({**chosen.to_json(), **overrides})
        except (PreprocessingError, TypeError) as error:
            raise PreprocessingError(f"--preprocessing: {error}") from None
    return chosen if size is None else chosen.at(size)


PAPER_IMAGENET = Preprocessing(
    224, round(224 / CROP_FRACTION), "bilinear", mean=(123.675, 116.28, 103.53),
    std=(1.0, 1.0, 1.0), pixel_scale=255.0,
)
"""The paper's ImageNet input (Section 4.1): a 224 centre crop of the image resized to 256, the
per-channel means subtracted from 0-255 pixels (Caffe's convention; no division)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet's per-channel mean on [0, 1] pixels (torchvision's and timm's)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet's per-channel standard deviation on [0, 1] pixels."""

TIMM_IMAGENET = Preprocessing(224, 256, "bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD)
"""What a timm state dict without its config is assumed to expect: timm's ImageNet evaluation of
``skresnext50_32x4d.ra_in1k`` (resize 256, centre crop 224, ImageNet mean/std on [0, 1])."""

def timm_preprocessing(config: Mapping[str, Any]) -> Preprocessing:
    """Our preprocessing from a timm pretrained config (or a model config holding one under
    ``pretrained_cfg``): resize to ``floor(size / crop_pct)`` as timm does, then the centre crop;
    :data:`TIMM_IMAGENET` when it names no input size."""
    pretrained_cfg = config.get("pretrained_cfg", config)
    if "input_size" not in pretrained_cfg:
        return TIMM_IMAGENET
    size = int(pretrained_cfg["input_size"][-1])
    crop_pct = float(pretrained_cfg.get("crop_pct") or 1.0)
    return Preprocessing(
        size,
        math.floor(size / crop_pct),
        pretrained_cfg.get("interpolation", TIMM_IMAGENET.interpolation),
        mean=tuple(pretrained_cfg.get("mean", TIMM_IMAGENET.mean)),
        std=tuple(pretrained_cfg.get("std", TIMM_IMAGENET.std)),
    )


LSKNET_IMAGENET = timm_preprocessing(
    {"input_size": (3, 224, 224), "crop_pct": 0.9, "interpolation": "bicubic"}
)
"""LSKNet's ImageNet input: its backbones were pretrained with VAN's classification code, whose
models carry timm's vision-transformer default config (224 input, crop_pct 0.9 so resize 248,
bicubic, ImageNet mean/std on [0, 1])."""

CIFAR = Preprocessing.square(
    32, (125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)
)
"""CIFAR's 32x32 images, normalised by the ResNeXt CIFAR recipe's per-channel mean and std."""
