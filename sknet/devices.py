"""Devices and processes: where a run computes, and its place among torchrun's processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from sknet.errors import UserError


@dataclass(frozen=True)
class Processes:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA if present), ``cpu``, ``cuda`` (this process's local GPU) or ``cuda:N``."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available; use --device cpu")
    chosen = torch.device(device if ":" in device else f"cuda:{local_rank}")
    torch.cuda.set_device(chosen)
    return chosen


def single_process(device: str) -> Processes:
    """One process on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``): evaluation's."""
    return Processes(0, 1, 0, pick_device(device))


def setup_processes(device: str) -> Processes:
    """Join torchrun's process group when launched by it (``WORLD_SIZE`` > 1); pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Processes(rank, world_size, local_rank, chosen)


def teardown_processes(processes: Processes) -> None:
    """Leave the process group that :func:`setup_processes` joined, if any."""
    if processes.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], processes: Processes) -> list[float]:
    """``values`` summed over every process (float64), on this process's device."""
    tensor = torch.tensor(values, dtype=torch.float64, device=processes.device)
    if processes.world_size > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


DEVICE_HELP = "auto (default), cpu, cuda, cuda:N"
THREADS_HELP = (
    "CPU threads per process (default: PyTorch's, one per core; on a loaded machine fewer can be "
    "faster)"
)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """PyTorch's intra-op CPU threads set to ``count`` (``None``: as they are) for the block."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gather(value: Any, processes: Processes) -> list[Any]:
    """``value`` of every process, by rank (any picklable object)."""
    if processes.world_size == 1:
        return [value]
    everyone: list[Any] = [None] * processes.world_size
    dist.all_gather_object(everyone, value)
    return everyone


def broadcast_buffers(model: nn.Module, processes: Processes) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics: DDP averages gradients, but
    each process updates its statistics from its own share of the batch)."""
    if processes.world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def default_workers(parallel: bool, requested: int | None = None) -> int:
    """Data-loader processes: ``requested`` if given; else none where they do not help
    (``parallel`` false: tensors in memory), else up to 8 per training process, leaving a core to
    each."""
    if requested is not None:
        return requested
    if not parallel:
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 1) // local - 1))
