"""Frozen normalisation: every BatchNorm of a model turned into the fixed per-channel affine map
that it is in eval mode, in every mode.

Detection and segmentation train with one or two images per device, too few for batch
statistics: the usual remedy (torchvision's detection models, Detectron2) keeps the pretrained
BatchNorm statistics and affine parameters fixed. :func:`freeze_norm` does that to any model:
each ``BatchNorm2d`` (the SK unit's fuse BatchNorm of Eq. 3 included) becomes torchvision's
``FrozenBatchNorm2d``, which torchvision's own detection code knows; every other BatchNorm
(``BatchNorm1d``/``3d`` of :class:`~sknet.layers.SKConv1d`/``3d``, ``SyncBatchNorm``,
``--sync-bn``'s), which torchvision has no frozen counterpart of, becomes our
:class:`FrozenBatchNorm`. A frozen model computes in training mode what the original computes
in eval mode, at any batch size; its state dict has the same names minus BatchNorm's batch
counters (``num_batches_tracked``), so weights go both ways. The fast path
(:mod:`sknet.layers.fast`) folds a frozen norm on the fly in eval mode on the CPU, as an eval-mode
BatchNorm, and leaves it to its module in training mode; :func:`sknet.deploy` folds frozen norms
as it folds BatchNorms (:func:`frozen_norm_types`).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sknet.layers.common import require_running_statistics

NOTHING_TO_FREEZE = "there is nothing to freeze; build it with them"
"""Why :func:`freeze_norm` refuses a BatchNorm without running statistics."""
COUNTER = "num_batches_tracked"
"""BatchNorm's batch counter: a frozen norm has none and drops it from state dicts it loads."""


class FrozenBatchNorm(nn.Module):
    """A BatchNorm of any number of spatial dimensions with fixed statistics and affine
    parameters: the eval-mode BatchNorm ``gamma * (x - mean) / sqrt(var + eps) + beta`` in every
    mode, on ``[N, C, *spatial]`` (or ``[N, C]``) inputs.

    Its state is that of torchvision's ``FrozenBatchNorm2d`` (buffers ``weight``, ``bias``,
    ``running_mean``, ``running_var``; nothing trains), and like it, it loads a BatchNorm's
    state dict (the batch counter is dropped).

    Args:
        num_features: C.
        eps: added to the variance.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        state_dict.pop(prefix + COUNTER, None)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def frozen_norm_types() -> tuple[type[nn.Module], ...]:
    """The frozen norm classes: ours, and torchvision's ``FrozenBatchNorm2d`` once torchvision is
    loaded (no model can hold one before, and sknet does not import torchvision to ask)."""
    misc = sys.modules.get("torchvision.ops.misc")
    return (FrozenBatchNorm,) if misc is None else (FrozenBatchNorm, misc.FrozenBatchNorm2d)


def batch_norm_types() -> tuple[type[nn.Module], ...]:
    """Every BatchNorm kind, the frozen ones of :func:`frozen_norm_types` included: what
    :func:`sknet.deploy` folds and the profile counts as BatchNorm."""
    return (_BatchNorm, *frozen_norm_types())


def freeze_norm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm of ``model`` (in place) by a frozen one with the same statistics,
    affine parameters and ``eps``; returns ``model`` (the frozen norm if ``model`` is itself a
    BatchNorm).

    ``BatchNorm2d`` becomes torchvision's ``FrozenBatchNorm2d``, any other BatchNorm
    (``BatchNorm1d``, ``BatchNorm3d``, ``SyncBatchNorm``) our :class:`FrozenBatchNorm`. A
    BatchNorm without affine parameters gets ``weight`` 1 and ``bias`` 0 (state-dict entries
    that the original lacks). The frozen norms hold copies of the tensors, on their device and
    in their dtype, and have no parameters: build the optimizer after freezing.

    Raises:
        sknet.errors.UserError: a BatchNorm without running statistics
            (``track_running_stats=False``): there is nothing to freeze.
    """
    if isinstance(model, _BatchNorm):
        require_running_statistics(model, "freeze_norm", type(model).__name__, NOTHING_TO_FREEZE)
        return _frozen(model)
    found = [
        (parent, name, child, f"{parent_name}.{name}".lstrip("."))
        for parent_name, parent in model.named_modules()
        for name, child in parent._modules.items()  # every name, a shared child's too
        if isinstance(child, _BatchNorm)
    ]
    for *_, norm, where in found:  # refused before anything changes
        require_running_statistics(norm, "freeze_norm", where, NOTHING_TO_FREEZE)
    frozen: dict[int, nn.Module] = {}  # one frozen norm for a BatchNorm registered twice
    for parent, name, norm, _ in found:
        if id(norm) not in frozen:
            frozen[id(norm)] = _frozen(norm)
        setattr(parent, name, frozen[id(norm)])
    return model


def _frozen(norm: nn.Module) -> nn.Module:
    """The frozen counterpart of the BatchNorm ``norm``, which has running statistics."""
    # torchvision costs a second to import: loaded when a model is frozen, not with sknet.
    from torchvision.ops.misc import FrozenBatchNorm2d

    kind = FrozenBatchNorm2d if isinstance(norm, nn.BatchNorm2d) else FrozenBatchNorm
    result = kind(norm.num_features, eps=norm.eps)
    statistics = (norm.running_mean, norm.running_var)
    affine = (norm.weight, norm.bias) if norm.affine else (
        torch.ones_like(norm.running_var), torch.zeros_like(norm.running_var)
    )
    for name, value in zip(("running_mean", "running_var", "weight", "bias"),
                           (*statistics, *affine), strict=True):
        setattr(result, name, value.detach().clone())
    return result.train(norm.training)
