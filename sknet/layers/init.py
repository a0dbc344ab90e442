"""Weight initialisation of the paper's networks (Section 4.1: He et al.'s)."""

from __future__ import annotations

from torch import nn

from sknet.layers.common import CONV_TYPES, LOCAL_BATCH_NORM_TYPES


def init_weights(model: nn.Module) -> None:
    """He initialisation (Section 4.1): Kaiming-normal convs (fan-out), BN to identity; in any
    number of spatial dimensions."""
    for module in model.modules():
        if isinstance(module, CONV_TYPES):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, LOCAL_BATCH_NORM_TYPES):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
