"""Selection units and their attention: which units select, their paper names, and a forward
hook on each unit's ``attention`` submodule (whose output is the weights: SK's softmax
``[N, M, C]``, Eq. 5, split attention's of the same shape, LSK's ``[N, M, H, W]``;
:mod:`sknet.analysis.kinds`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sknet.analysis.kinds import SPATIAL, unit_kind
from sknet.errors import UserError
from sknet.layers import SplitAttentionConv
from sknet.models.weights_io import model_name

_UNIT_NAME = re.compile(r"SK_(\d+)_(\d+)[a-z]?")


def stages(names: Sequence[str]) -> list[list[str]]:
    """Unit names grouped by stage (the ``{stage}`` of ``SK_{stage}_{block}``), in order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        match = _UNIT_NAME.fullmatch(name)
        groups.setdefault(match.group(1) if match else "", []).append(name)
    return list(groups.values())


def default_unit(names: Sequence[str]) -> str:
    """The unit of Figure 3 (left): the last of the second SK stage (SK_3_4 in SKNet-50)."""
    groups = stages(names)
    return groups[min(1, len(groups) - 1)][-1]


def stage_units(names: Sequence[str]) -> list[str]:
    """The last unit of every stage: Figure 3 (right) (SK_2_3, SK_3_4, SK_4_6, SK_5_3)."""
    return [group[-1] for group in stages(names)]


def default_class_units(names: Sequence[str]) -> list[str]:
    """Figure 4's low, middle and high unit: the last of the first, second and last stage."""
    last = stage_units(names)
    return list(dict.fromkeys([last[0], last[min(1, len(last) - 1)], last[-1]]))


def selecting_units(model: nn.Module) -> dict[str, nn.Module]:
    """The selection units of ``model`` that select, by their ``SK_{stage}_{block}`` name: SK
    units with attention between branches of different receptive fields, split-attention units
    of radix >= 2, LSK units (:func:`~sknet.analysis.kinds.unit_kind`).

    Raises:
        ValueError: the model has no selection units, none that selects, or units of both the
            per-channel and the spatial kind.
    """
    name = model_name(model)
    finder = getattr(model, "sk_units", None)
    units = finder() if callable(finder) else {}
    if not units:
        raise UserError(
            f"model {name!r} has no SK units, so there is no kernel selection to analyse; "
            "use an SK network (e.g. sknet50, sknet29, sk_shufflenet_v2_x1_0, sknet_digits)"
        )
    selecting = {unit_name: unit for unit_name, unit in units.items() if unit_kind(unit)}
    if not selecting:
        if all(isinstance(unit, SplitAttentionConv) for unit in units.values()):
            raise UserError(
                f"model {name!r}: its split-attention units have radix 1 (a sigmoid gate per "
                "channel, no choice between splits); nothing to analyse"
            )
        raise UserError(
            f"model {name!r}: its SK units have no attention between kernels of different "
            "receptive fields (attention=False, one branch, or equal kernels); nothing to analyse"
        )
    if len({unit_kind(unit) == SPATIAL for unit in selecting.values()}) > 1:
        raise UserError(
            f"model {name!r} mixes units that select per position (LSK) with units that select "
            "per channel; the analysis takes one kind at a time"
        )
    return selecting


@contextlib.contextmanager
def capture(units: Mapping[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the attention (``[N, M, C]``, or ``[N, M, H, W]`` for LSK) of every unit at each
    forward pass, by unit name.

    Uses only the public contract: a forward hook on each unit's ``attention`` submodule, whose
    output is the selection weights. The hooks are removed when the block ends.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def recorder(unit_name: str):
        def hook(module: nn.Module, inputs: Any, weights: torch.Tensor) -> None:
            captured[unit_name] = weights.detach().float()

        return hook

    try:
        for unit_name, unit in units.items():
            handles.append(unit.attention.register_forward_hook(recorder(unit_name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def capture_attention(
    model: nn.Module, images: torch.Tensor, units: Mapping[str, nn.Module] | None = None
) -> dict[str, torch.Tensor]:
    """The attention of every selecting unit for ``images`` in one forward pass (model in eval
    mode).

    Returns:
        ``{name: weights}`` in ``model.sk_units()`` order: ``[N, M, C]`` summing to 1 over M
        (SK, split attention), or LSK's ``[N, M, H, W]``.
    """
    units = selecting_units(model) if units is None else units
    with capture(units) as captured:
        model(images)
        return {name: captured[name] for name in units}

