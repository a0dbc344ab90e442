"""The settings of a training run: one dataclass that is the flags of ``sknet train``, the keys
of its YAML ``--config`` files and the fields that take the recipe's defaults.

A field's metadata (:class:`Option`) is its command-line help and parser, so a new setting is
one field here: the CLI (:mod:`sknet.cli`), the YAML keys and the resolution follow.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sknet.devices import DEVICE_HELP, THREADS_HELP
from sknet.errors import UserError
from sknet.preprocessing import MAX_INPUT_SIZE, MIN_INPUT_SIZE
from sknet.training.parsing import (
    MAX_CONFIG_BYTES,
    TypeMismatch,
    converted,
    describe_type,
    load_yaml,
    parse_mapping,
    parse_numbers,
    parse_size,
    parse_sizes,
)
from sknet.training.recipe import (
    FINE_TUNING_STEPS,
    Recipe,
    milestone_epochs,
    recipe_for,
    step_lr,
)


@dataclass(frozen=True)
class Option:
    """How a setting appears on the command line.

    Attributes:
        help: the flag's help text.
        parse: turns the flag's text into the value (``None``: an on/off switch, no value).
        metavar: the value's name in the help.
        choices: the accepted values, if a fixed few.
    """

    help: str = ""
    parse: Callable[[str], Any] | None = str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


def _flag(help: str = "", **option: Any) -> dict[str, Option]:
    """A :class:`TrainConfig` field's metadata: its command-line :class:`Option`
    (``parse=None`` for an on/off switch)."""
    return {"option": Option(help, **option)}


@dataclass
class TrainConfig:
    """Everything a training run depends on; ``None`` fields take the recipe's default.

    Attributes:
        data: ``--data`` spec (see :func:`sknet.data.open_data`).
        model: registered model name (default per dataset:
            :data:`~sknet.training.recipe.DEFAULT_MODELS`).
        model_kwargs: overrides of the model's registered config (e.g. ``{"attention": False}``).
        out: output directory.
        pretrained: weights to fine-tune from (:mod:`sknet.training.transfer`); the network is
            theirs, and the epochs the fine-tuning ones
            (:data:`~sknet.training.recipe.FINE_TUNING_EPOCHS`).
        freeze: fix the stem and the stages up to this one (``conv1``, ``conv2``, ...).
        backbone_lr_scale: the backbone's learning rate over the classifier's.
        preprocessing: overrides of how inputs are normalised (``mean``, ``std``,
            ``interpolation``); fine-tuning starts from the weights' own.
        epochs, batch_size, lr, momentum, weight_decay, label_smoothing, lr_milestones, lr_gamma,
        input_size, eval_sizes, min_scale: the recipe (see
            :class:`~sknet.training.recipe.Recipe`); ``batch_size`` is global (split over
            processes) and ``lr`` defaults to the recipe's, scaled linearly.
        seed: run seed (model init, shuffling, augmentation).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``.
        threads: CPU threads per process (default: PyTorch's).
        amp: autocast mixed precision with ``amp_dtype`` (``bf16`` or ``fp16``, the latter with a
            gradient scaler on CUDA).
        channels_last: NHWC memory format for the model and inputs.
        compile: ``torch.compile`` the training model.
        workers: data-loader processes per training process (default: 0 for in-memory data,
            else up to 8).
        sync_bn: BatchNorm statistics over every process (CUDA: SyncBatchNorm; CPU: over gloo).
        save_every: also write ``last.pt`` every this many steps within an epoch (0: only at
            epoch ends).
        strict: decode every image of a folder dataset up front and fail on any bad file.
        tensorboard: also log to ``out/tensorboard`` (needs the ``tensorboard`` package).
    """

    data: str = field(default="digits", metadata=_flag(
        "digits (default), digits:CLASSES[:N], scaled-mnist, scaled-digits (digits of known "
        "sizes), ImageNet-layout folder, cifar10:PATH, cifar100:PATH, synthetic[:N] (generated, "
        "for speed runs)"
    ))
    model: str | None = field(default=None, metadata=_flag(
        "registered model (default: sknet_digits on digits, sknet50 on folders)"
    ))
    model_kwargs: dict[str, Any] = field(default_factory=dict, metadata=_flag(
        "e.g. '{attention: false}'", parse=parse_mapping, metavar="YAML"
    ))
    out: str = field(default="runs/train", metadata=_flag("output folder (default runs/train)"))
    pretrained: str | None = field(default=None, metadata=_flag(
        "fine-tune from these weights: a training --out folder, a weights folder or "
        ".safetensors, a last.pt, or timm's files", metavar="WEIGHTS",
    ))
    freeze: str | None = field(default=None, metadata=_flag(
        "keep the stem and the stages up to this one fixed (conv1 = the stem, conv2, ...)",
        metavar="STAGE",
    ))
    backbone_lr_scale: float = field(default=1.0, metadata=_flag(
        "the backbone's learning rate as a fraction of the classifier's (default 1)",
        parse=float, metavar="F",
    ))
    preprocessing: dict[str, Any] = field(default_factory=dict, metadata=_flag(
        "input preprocessing overrides: mean, std, interpolation (default: the --pretrained "
        "weights', else the dataset's)", parse=parse_mapping, metavar="YAML",
    ))
    epochs: int | None = field(default=None, metadata=_flag(parse=int))
    batch_size: int | None = field(default=None, metadata=_flag(
        "global batch size, split across processes", parse=int
    ))
    lr: float | None = field(default=None, metadata=_flag(
        "default: the recipe's, scaled linearly with the batch", parse=float
    ))
    momentum: float | None = field(default=None, metadata=_flag(parse=float))
    weight_decay: float | None = field(default=None, metadata=_flag(parse=float))
    label_smoothing: float | None = field(default=None, metadata=_flag(parse=float))
    lr_milestones: list[float] | None = field(default=None, metadata=_flag(
        "fractions of the run after which lr is multiplied by lr-gamma",
        parse=parse_numbers(float), metavar="F,F,..",
    ))
    lr_gamma: float | None = field(default=None, metadata=_flag(parse=float))
    input_size: int | None = field(default=None, metadata=_flag(
        "training crop size", parse=parse_size, metavar="INPUT_SIZE"
    ))
    eval_sizes: list[int] | None = field(default=None, metadata=_flag(
        "centre-crop sizes the best weights are evaluated at",
        parse=parse_sizes, metavar="N,N,..",
    ))
    min_scale: float | None = field(default=None, metadata=_flag(
        "smallest area fraction of the random-size crop", parse=float
    ))
    seed: int = field(default=0, metadata=_flag(parse=int))
    device: str = field(default="auto", metadata=_flag(DEVICE_HELP))
    threads: int | None = field(default=None, metadata=_flag(THREADS_HELP, parse=int))
    amp: bool = field(default=False, metadata=_flag("mixed precision (autocast)", parse=None))
    amp_dtype: str = field(default="bf16", metadata=_flag(
        "autocast dtype (default bf16)", choices=("bf16", "fp16")
    ))
    channels_last: bool = field(default=False, metadata=_flag("NHWC memory format", parse=None))
    compile: bool = field(default=False, metadata=_flag("torch.compile the model", parse=None))
    workers: int | None = field(default=None, metadata=_flag(
        "data-loader processes per training process", parse=int
    ))
    sync_bn: bool = field(default=False, metadata=_flag(
        "BatchNorm statistics over all processes (CUDA and CPU)", parse=None
    ))
    save_every: int = field(default=1000, metadata=_flag(
        "also checkpoint every STEPS steps (default 1000; 0: epoch ends)", parse=int,
        metavar="STEPS",
    ))
    strict: bool = field(default=False, metadata=_flag(
        "decode every image up front; fail on any bad file", parse=None
    ))
    tensorboard: bool = field(default=False, metadata=_flag("log to OUT/tensorboard", parse=None))


@dataclass
class ResolvedConfig(TrainConfig):
    """The settings of a run after :func:`resolve`: the model named and every recipe value set.

    The same fields as :class:`TrainConfig` (and the same files: ``config.yaml``, ``last.pt``);
    only the types narrow, so that the training code never meets an unset value.
    """

    model: str = ""
    epochs: int = 0
    batch_size: int = 0
    lr: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    lr_milestones: list[float] = field(default_factory=list)
    lr_gamma: float = 0.0
    input_size: int = 0
    eval_sizes: list[int] = field(default_factory=list)
    min_scale: float = 0.0


SETTINGS = [f.name for f in fields(TrainConfig)]
"""Every setting's name: the YAML keys (``-`` or ``_``), the flags (``--name-with-dashes``)."""

RECIPE_SETTINGS = [
    f.name for f in fields(Recipe) if f.name in SETTINGS and f.name not in ("lr", "eval_sizes")
]
"""Settings whose default is the recipe's value as it stands (``lr`` scales with the batch and
``eval_sizes`` follows the input size: :func:`resolve`)."""


def options() -> list[tuple[str, Option]]:
    """``(name, option)`` of every setting, in declaration order (the CLI's flags)."""
    return [(f.name, f.metadata["option"]) for f in fields(TrainConfig)]


HINTS = typing.get_type_hints(TrainConfig)
"""Each setting's type, read from :class:`TrainConfig`'s annotations: what a value from a
``--config`` file or a Python keyword must be (:func:`check_keys`)."""


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 63 else text


def check_value(name: str, value: Any, where: str) -> Any:
    """``value`` checked against setting ``name``'s type (:data:`HINTS`), else a one-line error
    naming ``where``, the key, the value and the type due."""
    try:
        return converted(value, HINTS[name])
    except TypeMismatch:
        raise UserError(
            f"{where}: {name} must be {describe_type(HINTS[name])}, got {_shown(value)} "
            f"({type(value).__name__})"
        ) from None


def check_keys(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` with ``-`` in keys read as ``_`` and each value checked against its setting's
    type (:func:`check_value`); unknown settings fail, naming the known."""
    cleaned = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(cleaned) - set(SETTINGS))
    if unknown:
        raise UserError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}"
        )
    return {key: check_value(key, value, where) for key, value in cleaned.items()}


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Settings from a YAML ``--config`` file (keys as in :class:`TrainConfig`, ``-`` or ``_``;
    values of the fields' types; at most :data:`MAX_CONFIG_BYTES`, no anchors or aliases)."""
    path = Path(path)
    where = f"--config {path}"
    if path.is_dir():
        raise UserError(f"{where}: is a folder; name the YAML file of settings")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise UserError(f"{where}: cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(f"{where}: larger than {MAX_CONFIG_BYTES:,} bytes; settings are short")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{where}: not valid YAML ({error})") from None
    values = load_yaml(text, where)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        kind = type(values).__name__
        raise UserError(f"{where}: expected a mapping of settings, got a {kind}")
    return check_keys(values, where)


def layer(
    overrides: Mapping[str, Any],
    config_file: str | os.PathLike | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    resumed_out: str | None = None,
) -> TrainConfig:
    """Layer the settings: defaults < checkpoint (resume) < YAML file < explicit overrides."""
    values = asdict(TrainConfig())
    if checkpoint is not None:
        values.update(checkpoint)
        values["out"] = resumed_out
    if config_file is not None:
        values.update(load_config_file(config_file))
    values.update(check_keys(overrides, "sknet.train"))
    return TrainConfig(**values)


SIZES = f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} pixels"


def resolve(
    config: TrainConfig, kind: str, model: str, train_size: int | None = None
) -> ResolvedConfig:
    """Fill every unset recipe field from the dataset family's recipe, and validate.

    When fine-tuning, unset ``epochs`` are the fine-tuning recipe's, raised until the run has
    :data:`~sknet.training.recipe.FINE_TUNING_STEPS` steps over ``train_size`` images.
    """
    fine_tuning = config.pretrained is not None
    recipe = recipe_for(kind, model, fine_tuning)
    values = asdict(config)
    values["model"] = model
    epochs_unset = values["epochs"] is None
    for name in RECIPE_SETTINGS:
        if values[name] is None:
            values[name] = getattr(recipe, name)
    if fine_tuning and epochs_unset and train_size:
        steps = max(1, train_size // values["batch_size"])
        values["epochs"] = max(values["epochs"], math.ceil(FINE_TUNING_STEPS / steps))
    if values["eval_sizes"] is None:  # the recipe's, scaled with the training size
        scale = values["input_size"] / recipe.input_size
        sizes = [max(MIN_INPUT_SIZE, round(size * scale)) for size in recipe.eval_sizes]
        values["eval_sizes"] = list(dict.fromkeys(sizes))
    if values["lr"] is None:
        values["lr"] = recipe.lr * values["batch_size"] / recipe.lr_batch
    values["lr_milestones"] = [float(v) for v in values["lr_milestones"]]
    values["eval_sizes"] = [int(v) for v in values["eval_sizes"]]
    resolved = ResolvedConfig(**values)
    problems = [
        message
        for bad, message in (
            (resolved.epochs < 1, f"epochs must be >= 1, got {resolved.epochs}"),
            (resolved.batch_size < 2, f"batch size must be >= 2, got {resolved.batch_size}"),
            (not resolved.lr > 0, f"lr must be > 0, got {resolved.lr}"),
            (not 0 <= resolved.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (
                not all(0 < m <= 1 for m in resolved.lr_milestones),
                "lr milestones are fractions of the run, in (0, 1]",
            ),
            (
                not MIN_INPUT_SIZE <= resolved.input_size <= MAX_INPUT_SIZE,
                f"input size must be in {SIZES}, got {resolved.input_size}",
            ),
            (
                not all(MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE for size in resolved.eval_sizes),
                f"eval sizes must be in {SIZES}, got {resolved.eval_sizes}",
            ),
            (not 0 < resolved.min_scale <= 1, "min scale must be in (0, 1]"),
            (resolved.amp_dtype not in ("bf16", "fp16"), "amp dtype must be bf16 or fp16"),
            (resolved.save_every < 0, "save-every must be >= 0"),
            (
                resolved.threads is not None and resolved.threads < 1,
                f"threads must be >= 1, got {resolved.threads}",
            ),
            (
                not 0 <= resolved.backbone_lr_scale <= 1,
                "backbone lr scale must be in [0, 1] (a fraction of the classifier's)",
            ),
        )
        if bad
    ]
    if problems:
        raise UserError("; ".join(problems))
    return resolved


def schedule(config: ResolvedConfig) -> list[int]:
    """The epochs (0-based) from which each lr division applies in a resolved config."""
    return milestone_epochs(config.epochs, config.lr_milestones)


def lr_at(epoch: int, config: ResolvedConfig) -> float:
    """The learning rate of ``epoch`` (0-based) under a resolved config's step schedule."""
    return step_lr(epoch, config.lr, schedule(config), config.lr_gamma)
