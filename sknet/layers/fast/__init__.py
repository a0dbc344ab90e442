"""The fast path, behind one door: cheaper arrangements of the same arithmetic for
:class:`~sknet.layers.ConvBnAct` (:mod:`~sknet.layers.fast.conv`: subsampled strided and dilated
convolutions, CPU weight-gradient routes, eval-mode BN folded on the fly on the CPU) and
:class:`~sknet.layers.SKConv` (:mod:`~sknet.layers.fast.sk`: no stacked branch copies, one-pass
Select, the memory-lean training function).

A layer asks :func:`active` and then runs :func:`conv_bn_act` or :func:`sk_conv`, else its plain
forward (the reference the tests check the fast path against). It runs the SK branches'
training-mode BatchNorms itself and folds, on the CPU, eval-mode BatchNorms and frozen norms
(:func:`~sknet.layers.freeze_norm`) in eval mode; any other norm, a frozen one in training mode
included, runs as its module. Switch it off with
``SKNET_FAST_PATH=0``, :func:`set_enabled` or ``with disabled():``; it closes by itself under
``torch.fx`` tracing, ``torch.export``, ONNX export, TorchScript and ``torch.compile``.
"""

from sknet.layers.fast.conv import conv_bn_act, folds_bn
from sknet.layers.fast.door import (
    ENVIRONMENT_VARIABLE,
    active,
    disabled,
    is_enabled,
    set_enabled,
)
from sknet.layers.fast.sk import sk_conv

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "active",
    "conv_bn_act",
    "disabled",
    "folds_bn",
    "is_enabled",
    "set_enabled",
    "sk_conv",
]
