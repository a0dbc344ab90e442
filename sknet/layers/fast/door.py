"""The one switch of the fast path.

The fast path is on by default. ``SKNET_FAST_PATH=0`` in the environment (read at import) or
:func:`set_enabled` turns it off for the process, :func:`disabled` for a ``with`` block; then every
layer runs its plain forward (conv -> BN -> ReLU, the SK unit's Eqs. 1-6 as written). It also
closes by itself wherever a graph is captured rather than run: under ``torch.fx`` tracing (a
``Proxy`` input), ``torch.export``, ONNX export, TorchScript and ``torch.compile`` (TorchDynamo
cannot trace the training function's ``torch.autograd.grad`` nor its ``grad_fn`` test; the
compiler fuses the plain graph itself).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.fx

ENVIRONMENT_VARIABLE = "SKNET_FAST_PATH"
"""``0``, ``false``, ``no`` or ``off`` (any case) turns the fast path off at import."""

_OFF = ("0", "false", "no", "off")
_state = {"enabled": os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower() not in _OFF}


def set_enabled(enabled: bool) -> None:
    """Turn the fast path on or off for the whole process."""
    _state["enabled"] = bool(enabled)


def is_enabled() -> bool:
    """Whether the switch is on (the fast path may still close for a captured graph)."""
    return _state["enabled"]


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the plain forward inside the ``with`` block, then restore the switch."""
    before = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = before


def active(x: torch.Tensor) -> bool:
    """Whether a layer's forward on ``x`` takes the fast path: the switch is on and no graph is
    being captured (fx, ``torch.export``, ONNX, TorchScript, ``torch.compile``)."""
    return (
        _state["enabled"]
        and not isinstance(x, torch.fx.Proxy)
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_exporting()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )
