"""Model registry: names, their one config, and the paper's numbers for them.

Pure data: what is registered here is looked up by :mod:`sknet.models.factory`, which builds and
loads; nothing in this module builds a network or reads a file. Each entry carries its model's
default preprocessing, as timm's pretrained configs and torchvision's weights do.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sknet.errors import UserError
from sknet.preprocessing import PAPER_IMAGENET, Preprocessing


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
    counted by the convention named in ``counting`` (see
    :data:`sknet.models.complexity.COUNTING`). Errors are top-1 percentages: ``top1_224`` at
    the row's ``input_size`` (224 for the SK paper's models, a descendant's own crop otherwise,
    e.g. 320 for ResNeSt-200), ``top1_320`` Table 2's 320 crop of a model trained at 224.
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
        with the ``input_size`` column (default) or, at ``crop=320``, Table 2's 320 crop. Any
        other head has no paper number.
        """
        if self.cifar10_err is not None or self.cifar100_err is not None:
            return {10: self.cifar10_err, 100: self.cifar100_err}.get(num_classes)
        if num_classes != 1000:
            return None
        return self.top1_320 if crop == 320 else self.top1_224


UNSIZED_INPUT = 16
"""The input size of a registered model that records none (the digits models, whose data decides):
the built-in digits at the digits recipe's input size (``sknet.training.recipe.DIGITS_RECIPE``,
which the tests compare; the registry imports no training code)."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: the builder and the keyword config that defines it.

    ``lightweight`` marks the compact models of Table 4, which the paper trains with its
    lightweight recipe (Section 4.1: weight decay 4e-5 instead of 1e-4 and slightly less
    aggressive scale augmentation); training reads the flag, the recipe values live there.
    ``preprocessing`` is how the paper feeds the model (``None`` where the data decides: the
    digits models, normalised by their training set's statistics). ``hub_id`` names published
    weights of the same network on the Hugging Face hub (``ORG/NAME``, e.g. timm's), which
    ``create_model(name, pretrained=True)`` loads.
    """

    name: str
    builder: Callable[..., Any]
    config: dict[str, Any] = field(default_factory=dict)
    paper: Paper | None = None
    default_num_classes: int = 1000
    lightweight: bool = False
    preprocessing: Preprocessing | None = PAPER_IMAGENET
    hub_id: str | None = None

    @property
    def input_size(self) -> int:
        """The side of the square input the model is fed and counted at: its preprocessing's,
        else the paper's, else :data:`UNSIZED_INPUT`."""
        if self.preprocessing is not None:
            return self.preprocessing.input_size
        return self.paper.input_size if self.paper is not None else UNSIZED_INPUT


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
    builder: Callable[..., Any],
    *,
    paper: Paper | None = None,
    default_num_classes: int = 1000,
    lightweight: bool = False,
    preprocessing: Preprocessing | None = PAPER_IMAGENET,
    hub_id: str | None = None,
    **config: Any,
) -> ModelEntry:
    """Register ``name`` as ``builder(**config)``; ``config`` is the single source of its shape.

    ``lightweight=True`` selects the paper's lightweight training recipe and ``preprocessing`` is
    the model's default input (see :class:`ModelEntry`).
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    entry = ModelEntry(
        name, builder, dict(config), paper, default_num_classes, lightweight, preprocessing,
        hub_id,
    )
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
        raise UserError(f"unknown model {name!r}{hint}") from None


def register_paper_row(label: str, model: str, paper: Paper, **kwargs: Any) -> None:
    """Record a table row that is a registered model with overrides (e.g. Tables 6 and 7)."""
    _TABLE_ROWS.append(PaperRow(label, model, dict(kwargs), paper))


def paper_rows() -> list[PaperRow]:
    """Every registered model with paper numbers and every extra table row, as registered."""
    return list(_TABLE_ROWS)
