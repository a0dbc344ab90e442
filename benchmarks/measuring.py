"""What the speed benchmark measures with: tasks and their samples, a timer that also reads how
much of the CPU other processes took meanwhile, and the machine and versions a result records."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import sknet

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Task:
    """One measured configuration."""

    kind: str  # "eval", "deploy", "train" or "memory"
    batch: int
    compiled: bool
    channels_last: bool = False

    @property
    def label(self) -> str:
        layout = " channels_last" if self.channels_last else ""
        return f"{self.kind} b{self.batch} {'compile' if self.compiled else 'eager'}{layout}"


@dataclass
class Result:
    """Samples of one task per model; for timed tasks also the share of the CPU that other
    processes used during each sample (``None`` where it cannot be read)."""

    task: Task
    unit: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    others: dict[str, list[float | None]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def rounds(self, models: tuple[str, ...], quiet: bool) -> list[tuple[float, ...]]:
        """The samples of ``models`` round by round (only rounds where all were quiet)."""
        if not all(self.samples.get(model) for model in models):
            return []
        rows = zip(*(self.samples[m] for m in models), strict=True)
        if not quiet:
            return list(rows)
        shares = [self.others.get(m) or [None] * len(self.samples[m]) for m in models]
        calm = zip(*shares, strict=True)
        return [
            row for row, round_shares in zip(rows, calm, strict=True)
            if all(share is not None and share <= QUIET for share in round_shares)
        ]

    def median(self, model: str, quiet: bool = False) -> float | None:
        values = [row[0] for row in self.rounds((model,), quiet)]
        return statistics.median(values) if values else None


QUIET = 0.05
"""A CPU sample is quiet when other processes used at most this share of the machine's CPU time
while it ran (other jobs time-slice our threads and stall every parallel region's barrier)."""


def cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, ticks of this process), or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        with open("/proc/self/stat") as own:
            mine = own.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, int(mine[11]) + int(mine[12])  # utime + stime


def timer(device: str) -> Callable[[Callable[[], None]], tuple[float, float | None]]:
    """(seconds one call takes, share of the CPU other processes used meanwhile): perf_counter
    and /proc/stat on CPU, CUDA events on a GPU (no share)."""
    if device == "cpu":
        cores = os.cpu_count() or 1
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

        def cpu_time(call: Callable[[], None]) -> tuple[float, float | None]:
            before = cpu_ticks()
            start = time.perf_counter()
            call()
            seconds = time.perf_counter() - start
            after = cpu_ticks()
            if before is None or after is None:
                return seconds, None
            others = (after[0] - before[0]) - (after[1] - before[1])
            return seconds, max(others, 0) / (tick * seconds * cores)

        return cpu_time

    def cuda_time(call: Callable[[], None]) -> tuple[float, float | None]:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000, None

    return cuda_time


def machine(device: str) -> dict[str, object]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    description = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device == "cuda":
        description["gpu"] = torch.cuda.get_device_name()
    return description


def versions() -> dict[str, str | None]:
    try:
        import timm

        timm_version = timm.__version__
    except ImportError:
        timm_version = None
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "sknet_commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm_version,
        "sknet": sknet.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


