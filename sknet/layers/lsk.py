"""The Large Selective Kernel unit of LSKNet (Li et al., ICCV 2023, Section 3.2; IJCV 2024): a
large depthwise kernel decomposed into a sequence of depthwise convolutions, and a *spatial*
selection between the receptive fields of the sequence.

Where SK (Section 3.1 of the SK paper) selects between parallel branches with one softmax weight
per branch and channel, LSK selects between nested receptive fields with one sigmoid weight per
branch and *position*: the unit's ``attention`` outputs ``[N, M, H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sknet.layers.sk_conv import parse_branches

DepthwiseStep = tuple[int, int]
"""One step of the decomposition: ``(kernel_size, dilation)`` of a depthwise convolution."""

LSK_DECOMPOSITION: tuple[DepthwiseStep, ...] = ((5, 1), (7, 3))
"""LSKNet's: a 5x5 depthwise convolution, then a 7x7 one with dilation 3 on its output
(receptive fields 5 and 23)."""
LSK_SQUEEZE_KERNEL = 7
"""Kernel of the spatial selection's squeeze convolution (LSKNet's ``conv_squeeze``)."""


class LSKAttention(nn.Module):
    """Spatial selection: the channel-wise mean and max of the stacked branch features, a
    ``kernel x kernel`` convolution from those 2 maps to one map per branch, a sigmoid each.

    The module's output is the selection weights themselves, ``[N, M, H, W]`` in (0, 1) (a
    forward hook sees them; unlike SK's softmax they need not sum to one over the branches).

    Args:
        num_branches: M >= 2.
        kernel_size: of the squeeze convolution.
    """

    def __init__(self, num_branches: int, kernel_size: int = LSK_SQUEEZE_KERNEL) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(2, num_branches, kernel_size, padding=kernel_size // 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map the reduced branch features ``[N, M, C', H, W]`` to the weights ``[N, M, H, W]``."""
        channels = features.flatten(1, 2)  # every channel of every branch
        pooled = torch.cat(
            (channels.mean(1, keepdim=True), channels.amax(1, keepdim=True)), dim=1
        )
        return self.squeeze(pooled).sigmoid()


class LSKUnit(nn.Module):
    """Large Selective Kernel unit: decomposition, spatial selection, and a gate on the input.

    ``U_1 = DW_1(X)``, ``U_m = DW_m(U_{m-1})`` (the large kernel decomposed: each depthwise
    convolution widens the receptive field of the previous one); each ``U_m`` is reduced by its
    own 1x1 convolution to ``C/2`` channels, ``Ũ_m``; the :class:`LSKAttention` weights ``w_m``
    (per position) select ``S = sum_m w_m * Ũ_m``; a 1x1 convolution back to ``C`` channels gives
    the gate ``G`` and the output is ``X * G``. Every convolution has a bias, none is followed by
    a normalisation (LSKNet's ``LSKblock``).

    There is no fast variant: the forward below is the only one, with the fast path on or off.

    Args:
        channels: C, of the input and the output.
        branches: ``(kernel_size, dilation)`` of each depthwise convolution of the decomposition,
            in order (at least two); "same" padding keeps the spatial size.
        squeeze_kernel: kernel of the attention's squeeze convolution.
    """

    def __init__(
        self,
        channels: int,
        branches: Sequence[Sequence[int]] = LSK_DECOMPOSITION,
        squeeze_kernel: int = LSK_SQUEEZE_KERNEL,
    ) -> None:
        super().__init__()
        self.branch_specs = parse_branches(
            branches, ("kernel", "dilation"), "LSKUnit", kind="depthwise convolution"
        )
        if len(self.branch_specs) < 2:
            raise ValueError(f"LSKUnit needs at least two depthwise convolutions, got {branches}")
        reduced = channels // 2
        self.depthwise = nn.ModuleList(
            nn.Conv2d(
                channels, channels, kernel, padding=dilation * (kernel - 1) // 2,
                dilation=dilation, groups=channels,
            )
            for kernel, dilation in self.branch_specs
        )
        self.reduce = nn.ModuleList(nn.Conv2d(channels, reduced, 1) for _ in self.branch_specs)
        self.attention = LSKAttention(len(self.branch_specs), squeeze_kernel)
        self.expand = nn.Conv2d(reduced, channels, 1)

    @property
    def receptive_fields(self) -> list[int]:
        """Receptive field of each branch: the decomposition's extents accumulated."""
        fields, extent = [], 1
        for kernel, dilation in self.branch_specs:
            extent += dilation * (kernel - 1)
            fields.append(extent)
        return fields

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced, features = [], x
        for depthwise, reduce in zip(self.depthwise, self.reduce, strict=True):
            features = depthwise(features)
            reduced.append(reduce(features))
        stacked = torch.stack(reduced, dim=1)
        weights = self.attention(stacked)
        selected = (stacked * weights.unsqueeze(2)).sum(1)
        return x * self.expand(selected)
