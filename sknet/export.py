"""Inference copies of our models (every BatchNorm folded into the convolution before it) and
their ONNX export.

ONNX export uses torch's ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``,
which needs ``onnx`` and ``onnxscript``): the default and maintained path since torch 2.9, where the
TorchScript path is deprecated. Our eval-mode forward is plain tensor code (the custom autograd
function of the SK unit only runs in training); the one shape-dependent choice in it, whether
:class:`~sknet.layers.ConvBnAct` folds an eval-mode BN on the fly, is switched off while exporting,
so the graph keeps the batch dimension dynamic. docs/deployment.md says more.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import itertools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sknet.atomic import atomic_path
from sknet.errors import UserError
from sknet.layers import batch_norm_types, fold_bn
from sknet.layers.common import CONV_TYPES, input_channels, require_running_statistics
from sknet.preprocessing import check_size
from sknet.trained import load_trained

ONNX_OPSET = 18
"""The opset torch's exporter builds its graphs in (newer ones go through onnx's version converter,
older ones are refused: :func:`check_opset`); onnxruntime runs it from version 1.14 on."""
ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"
ONNX_PACKAGES = ("onnx", "onnxscript")


def deploy(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with every BatchNorm, frozen ones included
    (:func:`~sknet.layers.freeze_norm`), folded into its convolution.

    In eval mode ``BN(conv(x))`` is one convolution with a scaled weight and a bias. Each
    convolution (``Conv1d``, ``Conv2d`` or ``Conv3d``) directly followed by a BatchNorm in a
    ``nn.Sequential`` (every :class:`~sknet.layers.ConvBnAct`, including the fuse of the SK
    attention, Eq. 3, and the reduction of the split attention) becomes that convolution, and the
    BatchNorm an ``nn.Identity``; nothing else changes: module names, forward hooks (an SK unit's
    ``attention`` still outputs the weights [N, M, C]) and outputs (equal to ``model.eval()``'s up
    to float rounding). A module that defines ``fold_batch_norms()`` folds its own BatchNorms
    first (LSKNet's blocks, whose BatchNorms no convolution precedes). The copy is in eval mode
    and meant for inference only: it has no BatchNorm left to train. ``model`` itself is not
    modified.

    Raises:
        sknet.errors.UserError: if a BatchNorm keeps no running statistics, or does not directly
            follow a convolution (and folds no other way).
    """
    deployed = copy.deepcopy(model).eval()
    norms = batch_norm_types()
    for name, module in deployed.named_modules():
        if isinstance(module, _BatchNorm):
            require_running_statistics(
                module, "deploy", name,
                "it normalises by the batch even in eval mode and cannot be folded",
            )
    for module in list(deployed.modules()):
        fold_own = getattr(module, "fold_batch_norms", None)
        if callable(fold_own):
            fold_own()
    with torch.no_grad():
        for parent in deployed.modules():
            if not isinstance(parent, nn.Sequential):
                continue
            names = list(parent._modules)
            for conv_name, bn_name in itertools.pairwise(names):
                conv, bn = parent._modules[conv_name], parent._modules[bn_name]
                if isinstance(conv, CONV_TYPES) and isinstance(bn, norms):
                    _fold_into(conv, bn)
                    parent._modules[bn_name] = nn.Identity()
    left = [name for name, m in deployed.named_modules() if isinstance(m, norms)]
    if left:
        kind = type(deployed.get_submodule(left[0])).__name__
        raise UserError(
            f"deploy: cannot fold {kind} {left[0]!r} ({len(left)} norms in all): it does not "
            "directly follow a convolution in an nn.Sequential"
        )
    return deployed


def _fold_into(conv: nn.Module, bn: nn.Module) -> None:
    weight, bias = fold_bn(conv, bn)
    conv.weight = nn.Parameter(weight.detach().clone(), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=conv.weight.requires_grad)


def _require_onnx() -> None:
    """Import the exporter's dependencies, failing in one line that says how to get them."""
    for package in ONNX_PACKAGES:
        try:
            importlib.import_module(package)
        except ImportError:
            raise ModuleNotFoundError(
                f"ONNX export needs the packages {' and '.join(ONNX_PACKAGES)} ({package} is "
                "missing): pip install 'sknet[onnx]'"
            ) from None


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: int | tuple[int, int] = 224,
    in_chans: int | None = None,
    fold: bool = True,
    opset: int = ONNX_OPSET,
) -> Path:
    """Write ``model`` as an ONNX graph with a dynamic batch dimension, atomically.

    The graph has one input ``input`` [batch, in_chans, H, W] (float32) and one output
    ``logits`` [batch, num_classes]; ``batch`` is free, H and W are fixed to ``input_size``.

    Args:
        model: a network returning one tensor (e.g. from :func:`sknet.create_model`); it is not
            modified (a copy is exported).
        path: the ``.onnx`` file to write.
        input_size: H = W, or (H, W), of the inputs the graph takes.
        in_chans: input channels (default: those of the model's first convolution).
        fold: export :func:`deploy`'s copy (BatchNorm folded into the convolutions, fewer
            nodes); ``False`` exports the eval-mode model with its BatchNorm nodes.
        opset: ONNX opset (default :data:`ONNX_OPSET`, the exporter's own; newer ones work too,
            older ones are refused: :func:`check_opset`).

    Returns:
        ``path``.

    Raises:
        ModuleNotFoundError: ``onnx`` or ``onnxscript`` is not installed.
    """
    _require_onnx()
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    check_size(height, "the input height")
    check_size(width, "the input width")
    check_opset(opset)
    channels = input_channels(model) if in_chans is None else in_chans
    exported = deploy(model) if fold else copy.deepcopy(model).eval()
    # Batch 2: torch.export specialises dimensions of size 0 or 1 to constants.
    example = torch.zeros(2, channels, height, width, device=next(exported.parameters()).device)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            exported, (example,), dynamo=True, verbose=False, opset_version=opset,
            input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    written = program.model.opset_imports.get("") if hasattr(program, "model") else opset
    if written != opset:
        raise UserError(
            f"torch's exporter cannot write this model in ONNX opset {opset} (it came out in "
            f"opset {written}); ask for opset {ONNX_OPSET} or newer"
        )
    path = Path(path)
    with atomic_path(path) as temporary:
        program.save(temporary, external_data=False)
    return path


def check_opset(opset: object) -> int:
    """``opset`` if torch's exporter can write it, else a one-line error: from
    :data:`ONNX_OPSET` (its own; it converts down only with a warning, and may keep its own) up
    to the newest the installed ``onnx`` knows."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not ONNX_OPSET <= opset <= newest:
        raise UserError(
            f"ONNX opset {opset!r}: torch's exporter writes opsets {ONNX_OPSET}..{newest} (the "
            f"newest the installed onnx knows); pass one of those, or leave --opset out"
        )
    return opset


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    input_size: int | None = None,
    fold: bool = True,
    opset: int | None = None,
) -> dict[str, Any]:
    """``sknet export``: trained weights to an ONNX file, fed as their config says.

    Args:
        checkpoint: anything :func:`sknet.trained.load_trained` takes (a training ``--out``
            folder, a weights folder, ``X.safetensors``, ``last.pt``).
        out: the ``.onnx`` file to write.
        input_size: H = W of the graph's input (default: the checkpoint's preprocessing
            ``input_size``).
        fold: fold BatchNorm (deploy mode); ``False`` keeps eval-mode BatchNorm nodes.
        opset: ONNX opset (default :data:`ONNX_OPSET`).

    Returns:
        What was written: ``out``, ``weights``, ``model``, ``input_shape`` (batch as ``"N"``),
        ``folded``, ``opset``.
    """
    _require_onnx()
    opset = ONNX_OPSET if opset is None else check_opset(opset)
    if input_size is not None:
        check_size(input_size, "--input-size")
    path, model, record = load_trained(checkpoint, "--checkpoint")
    size = input_size or (record.preprocessing and record.preprocessing.input_size)
    if not size:
        raise UserError(f"{path}: its config records no input size; pass --input-size")
    channels = input_channels(model)
    export_onnx(model, out, input_size=int(size), in_chans=channels, fold=fold, opset=opset)
    return {
        "out": str(out), "weights": str(path), "model": record.name,
        "input_shape": ["N", channels, int(size), int(size)], "folded": fold, "opset": opset,
    }
