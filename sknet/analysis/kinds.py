"""The kinds of selection unit the analysis reads, and which two of a unit's choices it contrasts.

* ``kernels``: an SK unit (:class:`~sknet.layers.SKConv`), weights ``[N, M, C]`` (softmax over M
  branches of different receptive fields): the contrast is the branch of largest receptive field
  against the smallest (SKNet-50: the dilated 3x3, the paper's "5x5", against the 3x3).
* ``splits``: a split-attention unit (:class:`~sknet.layers.SplitAttentionConv`) of radix >= 2,
  weights ``[N, radix, C]`` of SK's shape, but over splits of ONE kernel and dilation, which differ
  only in the input channels they read and in their learned weights. There is no larger kernel:
  the contrast is the last split against the first, a same-kernel comparison (with radix 2 the
  difference ``a_2 - a_1`` is ``2 a_2 - 1``, i.e. the share of split 2). A change of it with object
  size is a shift between two paths of equal receptive field, not a change of receptive field.
* ``spatial``: an LSK unit (:class:`~sknet.layers.LSKUnit`), weights ``[N, M, H, W]`` (a sigmoid
  per branch and position, branches of growing receptive field): the contrast is the share of the
  largest receptive field, ``a_large / (a_small + a_large)``, per position
  (:mod:`sknet.analysis.spatial`).

Units that select nothing are not analysed: an SK unit without attention or with equal branches,
a split-attention unit of radix 1 (a sigmoid gate per channel).
"""

from __future__ import annotations

from torch import nn

from sknet.layers import LSKUnit, SKConv, SplitAttentionConv

SPATIAL = "spatial"
"""The kind whose weights are ``[N, choices, H, W]``."""


def unit_kind(unit: nn.Module) -> str | None:
    """``"kernels"``, ``"splits"`` or ``"spatial"`` for a unit that selects, else ``None``."""
    if isinstance(unit, SKConv):
        selects = unit.attention is not None and len(set(unit.receptive_fields)) > 1
        return "kernels" if selects else None
    if isinstance(unit, SplitAttentionConv):
        return "splits" if unit.radix > 1 else None
    if isinstance(unit, LSKUnit):
        return SPATIAL if len(set(unit.receptive_fields)) > 1 else None
    return None


def choices(unit: nn.Module) -> list[tuple[int, ...]]:
    """Each choice's convolution: ``(kernel, dilation, groups)`` of an SK branch or of a split
    (the same for every split; groups: the unit's cardinality), ``(kernel, dilation)`` of an LSK
    unit's depthwise step."""
    if isinstance(unit, SplitAttentionConv):
        conv = unit.splits.conv
        return [(conv.kernel_size[0], conv.dilation[0], unit.cardinality)] * unit.radix
    return [tuple(branch) for branch in unit.branch_specs]


def contrast(unit: nn.Module) -> tuple[int, int]:
    """``(large, small)``: the choices contrasted: of largest and smallest receptive field (the
    first of each where several tie), or for split attention the last split and the first."""
    if isinstance(unit, SplitAttentionConv):
        return unit.radix - 1, 0
    fields = unit.receptive_fields
    indices = range(len(fields))
    return max(indices, key=fields.__getitem__), min(indices, key=fields.__getitem__)
