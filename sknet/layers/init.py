"""Weight initialisation of the paper's networks (Section 4.1: He et al.'s)."""

from __future__ import annotations

from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def init_weights(model: nn.Module) -> None:
    """He initialisation (Section 4.1): Kaiming-normal convs (fan-out), BN to identity; in any
    number of spatial dimensions."""
    for module in model.modules():
        if isinstance(module, CONVS):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, BATCH_NORMS):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
