#!/usr/bin/env python
"""Weight gradient of a grouped 3x3 convolution on the CPU: oneDNN's own route against the routes
of sknet/layers/fast/cpu_conv.py (NHWC copies; the polyphase components of a dilated convolution).

For each size, channels per group and dilation it times (median of repeats, one thread pool as
set) the weight gradient alone, each route including the copies it makes, and prints one table
row. The ranking of the routes is what ``weight_grad_route`` encodes.

    python benchmarks/weight_grad_routes.py
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=100000000000 \\
        python benchmarks/weight_grad_routes.py     # without glibc's page-fault noise

With glibc's default allocator settings, a large tensor may come back from the kernel as fresh
pages, and a call that page-faults on its output can take 3x as long as the next; the settings
above keep freed memory (up to 32 MiB a block) in the process, so that the table times kernels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sknet.layers.fast.cpu_conv import phases

SIZES = ((128, 56), (256, 28), (512, 14))


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def weight_grad(grad, x, weight, dilation: int, groups: int) -> torch.Tensor:
    """The weight gradient of a stride-1, "same"-padded 3x3 convolution."""
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [dilation] * 2, [dilation] * 2, False, [0, 0], groups,
        [False, True, False],
    )[1]


def route_times(
    x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, dilation: int, groups: int,
    repeats: int,
) -> dict[str, float]:
    """Median ms of each route's weight gradient (``phases`` only for a dilated convolution)."""
    nhwc = torch.channels_last
    routes = {
        "native": lambda: weight_grad(grad, x, weight, dilation, groups),
        "nhwc": lambda: weight_grad(
            grad.contiguous(memory_format=nhwc), x.contiguous(memory_format=nhwc), weight,
            dilation, groups,
        ),
    }
    if dilation > 1:
        split = (dilation, dilation)
        routes["phases"] = lambda: weight_grad(
            phases(grad, split), phases(x, split), weight, 1, groups
        )
    return {name: median_ms(fn, repeats) for name, fn in routes.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--per-group", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          "ms per weight gradient (routes include their copies)")
    print("| channels | pixels | channels/group | dilation | oneDNN NCHW | NHWC copies | phases |")
    print("|---|---|---|---|---|---|---|")
    for channels, pixels in SIZES:
        for per_group in args.per_group:
            groups = channels // per_group
            x = torch.randn(args.batch, channels, pixels, pixels)
            grad = torch.randn_like(x)
            weight = torch.randn(channels, per_group, 3, 3)
            for dilation in (1, 2):
                times = route_times(x, grad, weight, dilation, groups, args.repeats)
                phased = f"{times['phases']:.2f}" if "phases" in times else "-"
                print(f"| {channels} | {pixels} | {per_group} | {dilation} | "
                      f"{times['native']:.2f} | {times['nhwc']:.2f} | {phased} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
