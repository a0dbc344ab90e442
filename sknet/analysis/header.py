"""The fields every ``analysis.json`` starts with, and what it records of each unit: one place for
the channel analysis (:mod:`sknet.analysis.report`) and the LSK spatial one
(:mod:`sknet.analysis.spatial`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from sknet.analysis.kinds import choices
from sknet.trained import Trained


def report_header(
    format_name: str, trained: Trained, command: str | None, size: int, scales: Sequence[float],
    images: int, limit: int | None, skipped: list[str],
) -> dict[str, Any]:
    """What was analysed and how: the file's format, the command, the checkpoint, its model and
    data, the input size and scales, how many images (and the ``--limit``), the units skipped."""
    return {
        "format": format_name,
        "format_version": 1,
        "command": command,
        "checkpoint": str(trained.path),
        "model": trained.record.name,
        "data": trained.data,
        "input_size": size,
        "scales": list(scales),
        "images": images,
        "limit": limit,
        "skipped": skipped,
    }


def unit_header(unit: nn.Module, large: int, small: int) -> dict[str, Any]:
    """A unit's choices (:func:`~sknet.analysis.kinds.choices`), their receptive fields, and the
    indices of the two choices the analysis contrasts (``large`` against ``small``)."""
    return {
        "branches": [list(branch) for branch in choices(unit)],
        "receptive_fields": list(unit.receptive_fields),
        "large": large,
        "small": small,
    }
