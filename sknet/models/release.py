"""A release of a network: its weights and record (:mod:`sknet.models.weights_io`) and a model
card for people, ``README.md``, generated from the record and the registry.

The card says what the network is (the paper and its numbers, parameters and multiply-adds as
counted here), how its inputs are prepared, where its weights come from (imported from timm, with
their licence, or trained with sknet: dataset, best epoch, command, version) and how to load it,
in sknet and, where the layouts match, in timm. ``sknet card NAME|WEIGHTS`` prints one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from sknet.atomic import write_text
from sknet.models.complexity import profile_model, short_count
from sknet.models.registry import get_entry
from sknet.models.weights_io import model_record, unwrap, write_weights
from sknet.preprocessing import Preprocessing
from sknet.record import ModelRecord

CARD_NAME = "README.md"


def describe_preprocessing(preprocessing: Preprocessing | None) -> str:
    """One line on how an image becomes the input."""
    if preprocessing is None:
        return "not recorded (the dataset's own is used)"
    scale = "" if preprocessing.pixel_scale == 1 else f" x {preprocessing.pixel_scale:g}"
    return (
        f"shorter side resized to {preprocessing.resize} ({preprocessing.interpolation}), centre "
        f"{preprocessing.input_size}x{preprocessing.input_size} crop, then (pixel in [0, 1]{scale}"
        f" - mean) / std with mean {list(preprocessing.mean)}, std {list(preprocessing.std)}"
    )


def _weights_line(record: ModelRecord) -> str:
    extra = record.extra
    if extra.get("timm_architecture"):
        licence = f", licence {extra['license']}" if extra.get("license") else ""
        return f"imported from timm's `{extra['timm_architecture']}`{licence}"
    if extra.get("lsknet_checkpoint"):
        return f"imported from LSKNet's official {extra['lsknet_checkpoint']} checkpoint"
    if extra.get("dataset"):
        parts = [f"trained with sknet on `{extra['dataset']}`"]
        if extra.get("epoch") is not None:
            parts.append(f"best epoch {extra['epoch']}, top-1 error {extra.get('top1_err')}%")
        if extra.get("command"):
            parts.append(f"by `{extra['command']}`")
        if extra.get("sknet_version"):
            parts.append(f"sknet {extra['sknet_version']}")
        return ", ".join(parts)
    return "untrained (He initialisation) unless loaded from elsewhere"


def model_card(model: nn.Module, location: str = "FOLDER") -> str:
    """The model card of ``model`` (its record, the registry's paper numbers, its counts), with
    the load snippets pointing at ``location``."""
    model = unwrap(model)
    record = model_record(model)
    entry = get_entry(record.name)
    paper = entry.paper
    size = record.preprocessing.input_size if record.preprocessing else entry.input_size
    counted = profile_model(model, size)
    params = sum(p.numel() for p in model.parameters())
    kwargs = f" with `{dict(record.kwargs)}`" if record.kwargs else ""
    rows = [("model", f"`{record.name}`{kwargs}")]
    paper_params = f" (paper: {paper.params})" if paper and paper.params else ""
    rows.append(("parameters", f"{short_count(params)}{paper_params}"))
    convention = paper.counting if paper else "sk"
    paper_flops = f" (paper: {paper.flops})" if paper and paper.flops else ""
    macs = short_count(counted.counted(convention))
    rows.append(("multiply-adds", f"{macs} at {size}x{size}{paper_flops}"))
    names = record.class_names
    shown = "not recorded" if names is None else ", ".join(names[:5]) + (
        ", ..." if len(names) > 5 else ""
    )
    rows.append(("classes", f"{record.num_classes} ({shown})"))
    rows.append(("input", describe_preprocessing(record.preprocessing)))
    if paper is not None:
        rows.append(("numbers from", paper.source))
        error = paper.top1_err(record.num_classes)
        if error is not None:
            rows.append(("paper top-1 error", f"{error}% (224x224)"))
    rows.append(("weights", _weights_line(record)))
    lines = [
        f"# {record.name}", "",
        "A network of [sknet](https://pypi.org/project/sknet/): Selective Kernel Networks (Li, "
        "Wang, Hu, Yang; CVPR 2019) and their family in PyTorch.", "", "| | |", "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in rows]
    lines += ["", "## Use", "", "```python", "import sknet", "",
              f'model = sknet.load_pretrained("{location}")', "```"]
    if entry.hub_id is not None and not record.kwargs:  # timm's published weights: its layout
        architecture = entry.hub_id.split("/")[-1].split(".")[0]
        lines += ["", f"In timm (the same network as its `{architecture}`):", "", "```python",
                  "import sknet", "import timm", "",
                  f'ours = sknet.load_pretrained("{location}")',
                  f'model = timm.create_model("{architecture}", num_classes=ours.num_classes)',
                  "model.load_state_dict(sknet.to_timm(ours))", "```"]
    return "\n".join(lines) + "\n"


def save_pretrained(model: nn.Module, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write ``model``'s weights and record (:func:`~sknet.models.weights_io.write_weights`, which
    says what ``kwargs`` take) and, for a folder, its model card ``README.md``.

    Returns:
        The path of the weights file.
    """
    weights = write_weights(model, path, **kwargs)
    if Path(path).suffix not in (".safetensors", ".json"):  # a folder
        write_text(weights.parent / CARD_NAME, model_card(model, weights.parent.name))
    return weights
