"""Parameters and multiply-adds of every model, beside the numbers the paper prints.

The counting itself (:func:`~sknet.models.complexity.profile_model`, the paper's two counting
conventions) lives in :mod:`sknet.models.complexity`; here every registered model is counted on
the meta device, so even SKNet-101 takes well under a second without allocating its weights,
and compared with the paper's printed figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from sknet.models import (
    LSKNet,
    ShuffleNetV2,
    create_model,
    get_entry,
    list_models,
    paper_rows,
)
from sknet.models.complexity import Profile, profile_model, short_count
from sknet.models.registry import ModelEntry, Paper, PaperRow
from sknet.models.zoo_lsknet import LSKNET_MODELS


def profile(name: str, input_size: int | None = None, **kwargs: Any) -> Profile:
    """Profile a registered model by name, built on the meta device: ``profile("sknet50")``."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    if input_size is None:
        paper = get_entry(name).paper
        input_size = paper.input_size if paper else 224
    return profile_model(model, input_size)


_UNITS = {"K": 1e3, "M": 1e6, "G": 1e9}


@dataclass(frozen=True)
class Printed:
    """A number as the paper prints it, e.g. ``"27.5M"``: its value and half a last digit."""

    text: str

    @property
    def scale(self) -> float:
        return _UNITS[self.text[-1]]

    @property
    def value(self) -> float:
        return float(self.text[:-1]) * self.scale

    @property
    def tolerance(self) -> float:
        digits = self.text[:-1]
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        return 0.5 * 10**-decimals * self.scale

    def matches(self, count: float) -> bool:
        """Whether ``count`` rounds to the printed figure (ties either way)."""
        return abs(count - self.value) <= self.tolerance * (1 + 1e-9)

    def format(self, count: float) -> str:
        """``count`` in this figure's unit, two more decimals than printed."""
        digits = self.text[:-1]
        decimals = (len(digits.split(".")[1]) if "." in digits else 0) + 2
        return f"{count / self.scale:.{decimals}f}{self.text[-1]}"


@dataclass(frozen=True)
class RowReport:
    """One profiled table row: our counts, the paper's, and whether they agree."""

    row: PaperRow
    profile: Profile
    params_status: str
    flops_status: str

    @property
    def ok(self) -> bool:
        return "OFF" not in (self.params_status, self.flops_status)


def _status(printed: str | None, count: float, derived: str | None) -> str:
    """``ok`` when the count rounds to the paper, ``documented`` when it rounds to the documented
    derivation instead, ``OFF`` otherwise, ``-`` when the paper prints nothing."""
    if printed is None:
        return "-"
    if Printed(printed).matches(count):
        return "ok"
    if derived is not None and Printed(derived).matches(count):
        return "documented"
    return "OFF"


def check_row(row: PaperRow) -> RowReport:
    """Profile one table row and compare it with the paper at the paper's printed precision."""
    paper: Paper = row.paper
    result = profile(row.model, paper.input_size, **row.kwargs)
    derivation = paper.derivation
    params_status = _status(
        paper.params, result.params, derivation.params if derivation else None
    )
    flops_status = _status(
        paper.flops, result.counted(paper.counting), derivation.flops if derivation else None
    )
    return RowReport(row, result, params_status, flops_status)


def report(pattern: str = "") -> list[RowReport]:
    """Check every paper row whose label contains ``pattern``."""
    return [check_row(row) for row in paper_rows() if pattern in row.label]


def format_table(reports: Iterable[RowReport]) -> str:
    """A Markdown table: ours beside the paper, with the check status of each number."""
    header = (
        "| row | source | ours #P | paper #P | diff | #P | ours MACs (conv+fc) | ours as counted "
        "| paper FLOPs | diff | FLOPs | counting |\n" + "|---" * 12 + "|"
    )
    lines = [header]
    for item in reports:
        paper, prof = item.row.paper, item.profile
        params_unit = Printed(paper.params) if paper.params else Printed("0.00M")
        flops_unit = Printed(paper.flops) if paper.flops else Printed("0.00G")
        counted = prof.counted(paper.counting)
        lines.append(
            f"| {item.row.label} | {paper.source} | {params_unit.format(prof.params)} | "
            f"{paper.params or '-'} | {_difference(prof.params, paper.params)} | "
            f"{item.params_status} | {flops_unit.format(prof.macs)} | "
            f"{flops_unit.format(counted)} | {paper.flops or '-'} | "
            f"{_difference(counted, paper.flops)} | {item.flops_status} | {paper.counting} |"
        )
    return "\n".join(lines)


def _difference(count: float, printed: str | None) -> str:
    """``count`` minus the printed figure, in percent of it."""
    if printed is None:
        return "-"
    return f"{100 * (count - Printed(printed).value) / Printed(printed).value:+.2f}%"


def format_derivations(reports: Iterable[RowReport]) -> str:
    """The documented derivation of every row that is not an exact match."""
    notes = []
    for item in reports:
        derivation = item.row.paper.derivation
        if derivation and "documented" in (item.params_status, item.flops_status):
            notes.append(f"- **{item.row.label}**: {derivation.why}")
    return "\n".join(notes)



# -- the README's model table -----------------------------------------------------------------



def family(entry: ModelEntry) -> str:
    """The model's family, read from its builder and config: LSKNet, else the block, the number
    of branches and attention (SK), ``radix`` (split attention: ResNeSt), ``se_reduction`` (SE)
    and the stem (CIFAR, or digits: one input channel; for LSKNet, one input channel alone).
    """
    config = entry.config
    selective = len(config.get("branches", ())) > 1 and config.get("attention", True)
    squeezed = config.get("se_reduction") is not None
    if issubclass(entry.builder, LSKNet):
        return "LSKNet (digits)" if config.get("in_chans") == 1 else "LSKNet"
    if issubclass(entry.builder, ShuffleNetV2):
        name = "SK-ShuffleNetV2" if selective else "SE-ShuffleNetV2" if squeezed else "ShuffleNetV2"
    elif config.get("block") == "basic":
        name = "SK-ResNet" if selective else "SE-ResNet" if squeezed else "ResNet"
    elif config.get("radix") is not None:
        name = "ResNeSt"
    else:
        name = "SKNet" if selective else "SENet" if squeezed else "ResNeXt"
    if config.get("stem") == "cifar":
        name += " (digits)" if config.get("in_chans") == 1 else " (CIFAR)"
    return name


def _paper_error(entry: ModelEntry) -> str:
    paper = entry.paper
    error = paper.top1_err(entry.default_num_classes) if paper is not None else None
    if error is None:
        return "-"
    return f"{error:.2f} ({paper.source})"


def _weights(entry: ModelEntry) -> str:
    if entry.name in LSKNET_MODELS:
        return "LSKNet's official checkpoints (`pretrained=PATH`: see docs/weights.md)"
    if entry.hub_id is None:
        return "train your own"
    return f"`hf-hub:{entry.hub_id}` (timm's; or `pretrained=True`)"


def model_table() -> str:
    """A Markdown table of every registered model: family, parameters and multiply-adds counted
    here (on the meta device, at the input size; multiply-adds as the paper's convention for the
    model counts them), the paper's top-1 error (or that of the source its entry names) and
    where published weights are. ``sknet models --table`` prints it; the README holds it."""
    lines = [
        "| model | family | #P | MACs | input | top-1 err % (source) | weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in list_models():
        entry = get_entry(name)
        size = entry.input_size
        counts = profile(name, size)
        convention = entry.paper.counting if entry.paper is not None else "sk"
        lines.append(
            f"| `{name}` | {family(entry)} | {short_count(counts.params)} | "
            f"{short_count(counts.counted(convention))} | {size} | {_paper_error(entry)} | "
            f"{_weights(entry)} |"
        )
    return "\n".join(lines)
