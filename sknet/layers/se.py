"""Squeeze-and-Excitation (Hu et al.), the SENet column of Table 1."""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Channel gating ``x * sigmoid(fc2(relu(fc1(pool(x)))))``.

    Table 1 writes the two fc layers as ``fc, [C/r, C]`` (r = 16); both carry a bias as in SENet.

    Args:
        channels: channels of the gated feature map.
        reduction: ratio r of the hidden width ``channels // r``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()
