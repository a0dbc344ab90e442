"""Size and cost of a network: parameters and multiply-adds of one forward pass.

Multiply-adds (MACs) come from :class:`torch.utils.flop_counter.FlopCounterMode` (which counts
convolutions and matrix products, two FLOPs per multiply-add); on the meta device nothing is
computed, only shapes.

The paper's FLOPs are multiply-adds, but its rows come from two counting conventions (see
``docs/reproducing.md``), and :data:`COUNTING` makes each one a computed sum of parts:

* ``"sk"``: the SK authors' own count (Tables 3, 6, 7, SKNet rows): convolutions and fc layers
  plus the Select of Eq. 6, ``V = sum_m a_m U_m``, one multiply-add per branch and output element
  (and alike per split of a split-attention unit: its weighted sum, or its gate at radix 1).
* ``"senet"``: rows the paper quotes from SENet (ResNeXt-50/101, SENet-50/101): convolutions and fc
  layers plus one multiply-add per BatchNorm output element and one per SE-gated element.
* ``"conv"``: convolutions and fc layers only, for rows whose source prints no FLOPs to match
  (LSKNet's ImageNet backbones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sknet.layers import (
    ConvBnAct,
    SKConv,
    SplitAttentionConv,
    SqueezeExcite,
    batch_norm_types,
    fast,
)
from sknet.layers.common import input_channels

COUNTING: dict[str, tuple[str, ...]] = {
    "sk": ("select_macs",),
    "senet": ("bn_macs", "gate_macs"),
    "conv": (),
}
"""Which element-wise parts, on top of conv/fc MACs, each paper counting convention includes."""


@dataclass(frozen=True)
class Profile:
    """Size and cost of one forward pass of one image.

    Attributes:
        params: learnable parameters.
        macs: conv and fc multiply-adds (``FlopCounterMode`` FLOPs / 2).
        bn_macs: BatchNorm output elements (one multiply-add each in inference).
        select_macs: SK Select multiply-adds: M per output element of each attention SK conv,
            radix per output element of each split-attention conv.
        gate_macs: SE-gated elements (one multiply each).
    """

    params: int
    macs: int
    bn_macs: int
    select_macs: int
    gate_macs: int

    def counted(self, convention: str) -> int:
        """Multiply-adds as the given paper convention counts them (see :data:`COUNTING`)."""
        return self.macs + sum(getattr(self, part) for part in COUNTING[convention])


def profile_model(
    model: nn.Module, input_size: int = 224, in_chans: int | None = None
) -> Profile:
    """Count parameters and multiply-adds of ``model`` on a ``1 x in_chans x S x S`` input.

    The model is run in eval mode on the device of its parameters (use the meta device for
    large models: nothing is computed, only shapes); ``in_chans`` defaults to what its first
    convolution takes.
    """
    in_chans = input_channels(model) if in_chans is None else in_chans
    parts = {"bn_macs": 0, "select_macs": 0, "gate_macs": 0}

    def adder(part: str, factor: int = 1):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            parts[part] += output.numel() * factor

        return hook

    def folded_bn(module: ConvBnAct, inputs: Any, output: torch.Tensor) -> None:
        # On the fast path an eval-mode ConvBnAct may fold its BN into the conv instead of
        # calling it.
        if fast.active(inputs[0]) and fast.folds_bn(module, inputs[0]):
            parts["bn_macs"] += output.numel()

    handles = []
    norms = batch_norm_types()
    for module in model.modules():
        if isinstance(module, norms):
            handles.append(module.register_forward_hook(adder("bn_macs")))
        elif isinstance(module, ConvBnAct):
            handles.append(module.register_forward_hook(folded_bn))
        elif isinstance(module, SKConv) and module.attention is not None:
            factor = len(module.branches)
            handles.append(module.register_forward_hook(adder("select_macs", factor)))
        elif isinstance(module, SplitAttentionConv):
            handles.append(module.register_forward_hook(adder("select_macs", module.radix)))
        elif isinstance(module, SqueezeExcite):
            handles.append(module.register_forward_hook(adder("gate_macs")))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, input_size, input_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    params = sum(p.numel() for p in model.parameters())
    return Profile(params, counter.get_total_flops() // 2, **parts)


def short_count(count: float) -> str:
    """``27.48M``, ``4.47G``, ``178.99K``: two decimals in the largest unit below the count (how
    the model table and the cards print parameters and multiply-adds)."""
    for suffix, unit in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= unit:
            return f"{count / unit:.2f}{suffix}"
    return str(int(count))
