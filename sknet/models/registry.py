"""Model registry: names, their one config, and the paper's numbers for them."""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from sknet.models.base import Backbone, FeatureExtractor


@dataclass(frozen=True)
class Derivation:
    """A documented gap between our count and the paper's printed one.

    ``params``/``flops`` are what *our* construction gives, printed to the precision that the
    derivation states (e.g. ``"27.56M"``); ``why`` is the arithmetic. ``sknet profile --check``
    accepts a row that misses the paper only if it matches these figures.
    """

    why: str
    params: str | None = None
    flops: str | None = None


@dataclass(frozen=True)
class Paper:
    """What the paper prints for one model or table row.

    ``params`` and ``flops`` are kept as printed (``"27.5M"``, ``"4.47G"``, ``"40.39M"``): the
    number of printed decimals is the precision ``--check`` holds us to. FLOPs are multiply-adds
    counted by the convention named in ``counting`` (see :data:`sknet.profile.COUNTING`). Errors
    are top-1 percentages.
    """

    source: str
    params: str | None = None
    flops: str | None = None
    top1_224: float | None = None
    top1_320: float | None = None
    cifar10_err: float | None = None
    cifar100_err: float | None = None
    input_size: int = 224
    counting: str = "sk"
    derivation: Derivation | None = None

    def top1_err(self, num_classes: int, crop: int | None = None) -> float | None:
        """The error the paper prints for a model trained with ``num_classes`` outputs.

        Table 5 prints one #P but two errors per CIFAR model: 10 classes compare with the
        CIFAR-10 column and 100 with the CIFAR-100 one. ImageNet models (1000 classes) compare
        with the 224x (default) or 320x centre-crop column. Any other head has no paper number.
        """
        if self.cifar10_err is not None or self.cifar100_err is not None:
            return {10: self.cifar10_err, 100: self.cifar100_err}.get(num_classes)
        if num_classes != 1000:
            return None
        return self.top1_320 if crop == 320 else self.top1_224


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: the builder and the keyword config that defines it.

    ``lightweight`` marks the compact models of Table 4, which the paper trains with its
    lightweight recipe (Section 4.1: weight decay 4e-5 instead of 1e-4 and slightly less
    aggressive scale augmentation); training reads the flag, the recipe values live there.
    """

    name: str
    builder: Callable[..., Backbone]
    config: dict[str, Any] = field(default_factory=dict)
    paper: Paper | None = None
    default_num_classes: int = 1000
    lightweight: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: a model (name + overrides) and what the paper prints for it."""

    label: str
    model: str
    kwargs: dict[str, Any]
    paper: Paper


_TABLE_ROWS: list[PaperRow] = []


def register_model(
    name: str,
    builder: Callable[..., Backbone],
    *,
    paper: Paper | None = None,
    default_num_classes: int = 1000,
    lightweight: bool = False,
    **config: Any,
) -> ModelEntry:
    """Register ``name`` as ``builder(**config)``; ``config`` is the single source of its shape.

    ``lightweight=True`` selects the paper's lightweight training recipe (see
    :class:`ModelEntry`).
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    entry = ModelEntry(name, builder, dict(config), paper, default_num_classes, lightweight)
    _REGISTRY[name] = entry
    if paper is not None:
        _TABLE_ROWS.append(PaperRow(name, name, {}, paper))
    return entry


def list_models(pattern: str = "") -> list[str]:
    """Registered model names containing ``pattern``, sorted."""
    return sorted(name for name in _REGISTRY if pattern in name)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise with the closest matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see sknet.list_models()"
        raise ValueError(f"unknown model {name!r}{hint}") from None


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: str | os.PathLike | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs (default: the model's dataset, 1000 for ImageNet; with
            ``pretrained``, the file's, which it must equal).
        pretrained: released weights to load (a directory with ``model.safetensors`` +
            ``config.json``, or ``X.safetensors`` with ``X.json``; see
            :mod:`sknet.models.pretrained`); their recorded kwargs are the defaults.
        features_only: return a :class:`~sknet.models.base.FeatureExtractor` instead, which
            outputs a list of feature maps and describes them in ``feature_info``.
        out_indices: with ``features_only``, the feature levels to return: 0 is the stem
            (stride 2 on ImageNet models), 1.. the stages (strides 4, 8, 16, 32 on the ImageNet
            ResNeXt family); default every stage.
        **kwargs: overrides of the registered config, e.g. ``branches=[(3, 1, 32), (5, 1, 64)]``
            or ``attention=False`` for the rows of Tables 6 and 7.

    Returns:
        The model; ``model.config`` records ``name``, ``num_classes`` and the overrides, which is
        all that is needed to build it again.
    """
    entry = get_entry(name)
    if out_indices is not None and not features_only:
        raise ValueError(f"{name}: out_indices needs features_only=True")
    accepted = set(inspect.signature(entry.builder).parameters) - {"num_classes"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise ValueError(
            f"model {name!r} does not take {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    if pretrained is not None:
        from sknet.models.pretrained import build_pretrained  # imports this module

        model = build_pretrained(name, pretrained, num_classes, kwargs)
        return FeatureExtractor(model, out_indices) if features_only else model
    classes = entry.default_num_classes if num_classes is None else num_classes
    model = entry.builder(num_classes=classes, **{**entry.config, **kwargs})
    model.config = {"name": name, "num_classes": classes, "kwargs": dict(kwargs)}
    if features_only:
        return FeatureExtractor(model, out_indices)
    return model


def register_paper_row(label: str, model: str, paper: Paper, **kwargs: Any) -> None:
    """Record a table row that is a registered model with overrides (e.g. Tables 6 and 7)."""
    _TABLE_ROWS.append(PaperRow(label, model, dict(kwargs), paper))


def paper_rows() -> list[PaperRow]:
    """Every registered model with paper numbers and every extra table row, as registered."""
    return list(_TABLE_ROWS)
