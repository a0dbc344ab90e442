"""Fine-tuning: a run that starts from trained weights instead of He initialisation.

``--pretrained WEIGHTS`` takes anything the one loader (:func:`sknet.models.factory.load`)
reads (a training run's folder, our weights folder or ``.safetensors``, a ``last.pt``, timm's
files). The network is the weights' own; its classifier is kept only when the dataset fits it by
the record's rule (the same count and, where the weights record class names, the same names),
otherwise it is re-initialised. A grey dataset on colour weights (or the reverse) adapts the
first convolution (exact for grey inputs where every channel is normalised alike).
``--freeze convK`` keeps the stem (conv1) and the stages up to convK as they are (weights fixed,
BatchNorm statistics frozen), and ``--backbone-lr-scale`` sets the rate of the rest of the
backbone against the classifier's. Each step says what it did, in the run's log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from sknet.errors import UserError
from sknet.layers.common import first_conv
from sknet.models.factory import load, renew_classifier
from sknet.models.weights_io import model_name
from sknet.record import ModelRecord
from sknet.training.config import TrainConfig


@dataclass
class Start:
    """Starting weights: the file read and the network (train mode) carrying their record."""

    path: Path
    model: nn.Module

    @property
    def record(self) -> ModelRecord:
        return self.model.record

    @property
    def name(self) -> str:
        return self.record.name


def load_start(weights: str) -> Start:
    """Read ``--pretrained`` weights; a missing, damaged or foreign file fails in one line."""
    loaded = load(weights, flag="--pretrained")
    return Start(loaded.path, loaded.model.train())


def starting_config(start: Start, config: TrainConfig, source_kind: str) -> TrainConfig:
    """``config`` for fine-tuning from ``start``: the weights' model (checked against
    ``--model``) and, for image files, their input size unless ``--input-size`` is given. Their
    preprocessing is the layer under the user's overrides
    (:func:`sknet.training.setup.run_preprocessing`)."""
    check_start(start, config.model, config.model_kwargs)
    input_size = config.input_size
    recorded = start.record.preprocessing
    if input_size is None and source_kind == "imagenet" and recorded is not None:
        input_size = recorded.input_size  # images resized from files
    return replace(config, model=start.name, input_size=input_size)


def check_start(start: Start, model: str | None, model_kwargs: Mapping[str, Any]) -> None:
    """``--model`` and ``--model-kwargs`` cannot build another network than the weights'."""
    if model is not None and model != start.name:
        raise UserError(
            f"--pretrained {start.path} holds weights of model {start.name!r}, not --model "
            f"{model!r}; leave --model out to fine-tune {start.name!r}"
        )
    if model_kwargs:
        raise UserError(
            f"--model-kwargs: the network is the one --pretrained {start.path} holds "
            f"({start.name!r} {dict(start.record.kwargs) or ''}); drop --model-kwargs"
        )


def adapt(
    start: Start, class_names: Sequence[str], channels: int
) -> tuple[nn.Module, list[str]]:
    """The starting network fitted to a dataset: its input channels and classifier.

    The classifier is kept when the dataset fits it by the record's one rule
    (:meth:`~sknet.record.ModelRecord.classes_fit`: the same count and, where the weights record
    names, the same names), else re-initialised.

    Returns:
        The network and the log lines that say what was kept and what re-initialised. Call it
        with the run's RNG seeded: a new classifier is drawn from it.
    """
    model = start.model
    record = start.record
    notes = []
    if record.preprocessing is None:
        notes.append("the weights record no preprocessing: the data's own is used")
    before = first_conv(model).in_channels
    if before != channels:
        adapt_input_channels(model, channels)
        notes.append(
            f"adapted the first convolution from {before} to {channels} input channel(s) "
            "(for grey images: exact where the channels are normalised alike, close otherwise)"
        )
    if record.class_names is None:
        notes.append("the weights record no class names: the classifier is kept if the count fits")
    tensors = len(model.state_dict())
    if record.classes_fit(class_names):
        notes.append(f"kept all {tensors} tensors, the classifier included (the same classes)")
        return model, notes
    previous = model.num_classes
    kept = renew_classifier(model, len(class_names))
    why = "another class count" if previous != len(class_names) else "other class names"
    notes.append(
        f"kept {kept} of {tensors} tensors; re-initialised the classifier ({previous} -> "
        f"{len(class_names)} classes: {why})"
    )
    return model, notes


def adapt_input_channels(model: nn.Module, channels: int) -> None:
    """Give ``model``'s first convolution ``channels`` inputs: colour weights summed for one
    channel, a grey weight spread over three (a third each). For grey images that computes what
    the original did on them where every channel is normalised alike (else approximately)."""
    conv = first_conv(model)
    weight = conv.weight.detach()
    if conv.in_channels == 3 and channels == 1:
        adapted = weight.sum(1, keepdim=True)
    elif conv.in_channels == 1 and channels == 3:
        adapted = weight.repeat(1, 3, *[1] * (weight.dim() - 2)) / 3
    else:
        raise UserError(
            f"--pretrained: the weights take {conv.in_channels} input channels and the data has "
            f"{channels}; only grey <-> colour (1 <-> 3) can be adapted"
        )
    conv.weight = nn.Parameter(adapted.contiguous())
    conv.in_channels = channels
    record = model.record
    model.record = replace(record, kwargs={**record.kwargs, "in_chans": channels})


def stage_names(model: nn.Module) -> list[str]:
    """The names ``--freeze`` takes: ``conv1`` (the stem), then one per stage, paper-numbered."""
    first = getattr(model, "first_stage_index", 2)
    return ["conv1", *(f"conv{first + index}" for index in range(len(model.stages)))]


def frozen_modules(model: nn.Module, stage: str | None) -> list[nn.Module]:
    """The stem and the stages up to ``stage`` (``None``: nothing)."""
    if stage is None:
        return []
    names = stage_names(model)
    if stage not in names:
        name = model_name(model)
        raise UserError(
            f"--freeze {stage}: no such stage of {name!r}; it has {', '.join(names)} "
            "(conv1 is the stem; freezing convK keeps conv1..convK fixed)"
        )
    return [model.stem, *list(model.stages)[: names.index(stage)]]


def freeze(modules: Sequence[nn.Module]) -> int:
    """Fix the parameters of ``modules`` (they get no gradient); returns how many they hold."""
    count = 0
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
            count += parameter.numel()
    return count


def keep_frozen(modules: Sequence[nn.Module]) -> None:
    """BatchNorm in eval mode in the frozen part (after every ``model.train()``): its statistics
    stay those of the starting weights."""
    for module in modules:
        module.eval()


def parameter_groups(model: nn.Module, backbone_scale: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the trainable backbone at ``backbone_scale`` times the
    head's (``fc``) learning rate, as ``lr_scale``; one group when the scale is 1."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if backbone_scale == 1.0:
        return [{"params": trainable, "lr_scale": 1.0}]
    head = {id(p) for p in model.fc.parameters()}
    return [
        {"params": [p for p in trainable if id(p) not in head], "lr_scale": backbone_scale},
        {"params": [p for p in trainable if id(p) in head], "lr_scale": 1.0},
    ]

