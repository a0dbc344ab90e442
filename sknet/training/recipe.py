"""The paper's training recipe (Section 4.1) and its counterparts for CIFAR and digits.

A :class:`Recipe` holds the defaults of one dataset family; :func:`recipe_for` picks it for a
dataset and model (lightweight models of Table 4 get their lighter weight decay).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sknet.models.registry import get_entry

DEFAULT_MODELS = {
    "digits": "sknet_digits", "scaled": "sknet_digits", "imagenet": "sknet50", "cifar": "sknet29",
}
"""The model trained when ``--model`` is not given, per dataset family."""


@dataclass(frozen=True)
class Recipe:
    """The optimisation and augmentation defaults of one dataset family.

    ``lr`` is the learning rate at batch ``lr_batch``; other batch sizes scale it linearly.
    ``lr_milestones`` are fractions of the run after which the rate is multiplied by
    ``lr_gamma`` (0.3/0.6/0.9 of 100 epochs are the paper's epochs 30/60/90).
    """

    epochs: int
    batch_size: int
    lr: float
    lr_batch: int
    momentum: float
    weight_decay: float
    label_smoothing: float
    lr_milestones: tuple[float, ...]
    lr_gamma: float
    input_size: int
    eval_sizes: tuple[int, ...]
    min_scale: float


DIGITS_RECIPE = Recipe(
    epochs=15, batch_size=64, lr=0.1, lr_batch=64, momentum=0.9, weight_decay=1e-4,
    label_smoothing=0.1, lr_milestones=(0.3, 0.6, 0.9), lr_gamma=0.1, input_size=16,
    eval_sizes=(16,), min_scale=1.0,
)
"""Ours, for the README's main job: the paper's optimiser, schedule shape and label smoothing,
sized to finish in minutes on 2 CPU cores."""

RECIPES: dict[str, Recipe] = {
    # Section 4.1: SGD momentum 0.9, batch 256, lr 0.1 / 10 every 30 of 100 epochs, wd 1e-4,
    # label smoothing, random-size crop 224 + flip, centre-crop evaluation at 224 and 320.
    "imagenet": Recipe(
        epochs=100, batch_size=256, lr=0.1, lr_batch=256, momentum=0.9, weight_decay=1e-4,
        label_smoothing=0.1, lr_milestones=(0.3, 0.6, 0.9), lr_gamma=0.1, input_size=224,
        eval_sizes=(224, 320), min_scale=0.08,
    ),
    # ResNeXt's CIFAR recipe (Table 5): 300 epochs, batch 128, lr 0.1 / 10 at 50% and 75%,
    # wd 5e-4, pad-4 crop + flip; no label smoothing.
    "cifar": Recipe(
        epochs=300, batch_size=128, lr=0.1, lr_batch=128, momentum=0.9, weight_decay=5e-4,
        label_smoothing=0.0, lr_milestones=(0.5, 0.75), lr_gamma=0.1, input_size=32,
        eval_sizes=(32,), min_scale=1.0,
    ),
    "digits": DIGITS_RECIPE,
    # Ours, for the scaled digits (4,000 training digits on a 32-pixel canvas): the digits
    # recipe for 10 epochs, the rate divided at half and three quarters of the run.
    "scaled": replace(
        DIGITS_RECIPE, epochs=10, lr_milestones=(0.5, 0.75), input_size=32, eval_sizes=(32,)
    ),
}

LIGHTWEIGHT = {"weight_decay": 4e-5, "min_scale": 0.25}
"""Section 4.1 for lightweight models (ShuffleNetV2, Table 4): weight decay 4e-5 and "slightly
less aggressive scale augmentation"; the paper gives no number for the latter, we use 25%."""


def is_lightweight(model: str) -> bool:
    """Whether the registry marks ``model`` lightweight (ShuffleNet-class); ``False`` if unset."""
    return bool(getattr(get_entry(model), "lightweight", False))


FINE_TUNING_EPOCHS = 0.3
"""Fine-tuning (``--pretrained``) runs 30% of the family's epochs (rounded, at least one) with its
learning rate and step schedule, for at least :data:`FINE_TUNING_STEPS` steps. A lower rate for
the backbone (``--backbone-lr-scale``) or a frozen stem and stages (``--freeze``) are options:
on the digits transfer of docs/training.md both did worse than the same rate everywhere."""

FINE_TUNING_STEPS = 300
"""The fewest optimizer steps a fine-tuning run takes by default: on a small dataset 30% of the
epochs would be a few dozen steps, so the epochs rise until the run has this many."""


def recipe_for(kind: str, model: str, fine_tuning: bool = False) -> Recipe:
    """The default recipe for dataset family ``kind`` and registered ``model`` (from scratch, or
    fine-tuning from pretrained weights)."""
    recipe = RECIPES[kind]
    if is_lightweight(model):
        recipe = replace(recipe, **LIGHTWEIGHT)
    if fine_tuning:
        recipe = replace(
            recipe, epochs=max(1, math.floor(FINE_TUNING_EPOCHS * recipe.epochs + 0.5))
        )
    return recipe


def milestone_epochs(epochs: int, fractions: Sequence[float]) -> list[int]:
    """Epochs (0-based) from which each lr division applies: ``f * epochs`` rounded half up."""
    return [max(1, math.floor(fraction * epochs + 0.5)) for fraction in fractions]


def step_lr(epoch: int, lr: float, milestones: Sequence[int], gamma: float) -> float:
    """Step schedule: ``lr * gamma ** (milestones passed)`` at ``epoch`` (0-based)."""
    return lr * gamma ** sum(epoch >= milestone for milestone in milestones)
