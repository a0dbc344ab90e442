"""``--sync-bn``: BatchNorm statistics over the whole global batch, on every kind of device.

Under torchrun each process sees its share of the batch; plain BatchNorm normalises by that
share's moments and keeps its own running statistics, so two processes do not train the network
one process would at the same global batch. PyTorch's ``nn.SyncBatchNorm`` fixes that on GPUs
only (its forward refuses CPU tensors); :class:`ProcessSyncBatchNorm` does it on any device by
summing each channel's moments (sum, sum of squares, count) over the processes with one
all-reduce, which autograd differentiates (its gradient is the all-reduced gradient), so the
backward is that of BatchNorm over the global batch. In evaluation, or on one process, it is
plain BatchNorm, and its parameters and buffers are a BatchNorm's (same state-dict keys).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sknet.layers.common import LOCAL_BATCH_NORM_TYPES


class _SumOverProcesses(torch.autograd.Function):
    """``tensor`` summed over the processes; the gradient is summed likewise."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=ctx.group)
        return total, None


class ProcessSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the batch over all processes.

    Not an ``nn.BatchNorm2d``, so the fast path (:mod:`sknet.layers.fast`), which runs local
    BatchNorms itself, leaves it to this module. The moments are taken around the running mean
    (the same on every process) and summed in float64, so that the variance does not lose
    precision to a large mean.
    """

    def __init__(self, *args: Any, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _synchronised(self) -> bool:
        return (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self._synchronised():
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        shape = (1, channels) + (1,) * (input.dim() - 2)
        axes = [0, *range(2, input.dim())]
        running = self.running_mean is not None and self.track_running_stats
        shift = self.running_mean.detach() if running else input.new_zeros(channels)
        centred = input - shift.to(input.dtype).view(shape)
        count = torch.tensor([input.numel() // channels], dtype=torch.float64, device=input.device)
        local = torch.cat([
            centred.sum(axes, dtype=torch.float64),
            (centred * centred).sum(axes, dtype=torch.float64),
            count,
        ])
        group = self.process_group or dist.group.WORLD
        total = _SumOverProcesses.apply(local, group)
        n = total[-1].detach()
        offset = total[:channels] / n
        variance = (total[channels:2 * channels] / n - offset * offset).clamp_min(0)
        if running:
            self._update_running(shift.double() + offset.detach(), variance.detach(), n)
        invstd = torch.rsqrt(variance + self.eps).to(input.dtype)
        out = (centred - offset.to(input.dtype).view(shape)) * invstd.view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, variance: torch.Tensor, n: torch.Tensor) -> None:
        """BatchNorm's update of the running statistics (the unbiased variance)."""
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        factor = (
            1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        )
        unbiased = variance * n / (n - 1) if n > 1 else variance
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def convert_sync_bn(module: nn.Module, process_group: Any = None) -> nn.Module:
    """``module`` with every local BatchNorm replaced by a :class:`ProcessSyncBatchNorm` that
    shares its parameters and buffers (in place below the top; the same optimizer state and
    state-dict keys)."""
    if isinstance(module, LOCAL_BATCH_NORM_TYPES):
        synced = ProcessSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats, process_group=process_group,
            device=module.running_mean.device if module.running_mean is not None else None,
        )
        for name, value in [*module.named_parameters(recurse=False),
                            *module.named_buffers(recurse=False)]:
            setattr(synced, name, value)
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_sync_bn(child, process_group))
    return module
