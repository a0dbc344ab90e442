#!/usr/bin/env python
"""Where the time goes: torch.profiler's per-op self time, SKNet-50 beside ResNeXt-50.

Runs our ``sknet50`` and ``resnext50_32x4d`` (or any two registered models) alternately under
the profiler and prints, per ATen op, the self time of each and the difference, with
convolutions split into grouped 3x3 and dense (1x1, stem) ones. The sum of the differences is
what the SK unit costs; the grouped-convolution rows are the floor (the extra dilated branch).

    python benchmarks/profile_ops.py --mode eval --batch 8
    python benchmarks/profile_ops.py --mode train --batch 8
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sknet


def category(event) -> str:
    """The op name, with convolutions split into grouped 3x3 and dense."""
    name = event.key
    if name not in ("aten::mkldnn_convolution", "aten::convolution_backward"):
        return name
    shapes = event.input_shapes
    image, weight = (shapes[0], shapes[1]) if name == "aten::mkldnn_convolution" else shapes[1:3]
    grouped = len(weight) == 4 and weight[-1] > 1 and weight[1] < image[1]
    return f"{name} ({'grouped 3x3' if grouped else 'dense'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["eval", "train"], default="eval")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("models", nargs="*", default=["sknet50", "resnext50_32x4d"])
    args = parser.parse_args()
    if len(args.models) != 2:
        parser.error("give two model names (or none for sknet50 and resnext50_32x4d)")
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 1000, (args.batch,))
    models = {name: sknet.create_model(name).train(args.mode == "train") for name in args.models}
    optimizers = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
                  for n, m in models.items()}

    def step(name: str) -> None:
        if args.mode == "eval":
            with torch.inference_mode():
                models[name](x)
            return
        F.cross_entropy(models[name](x), labels).backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    for name in models:
        step(name)
        step(name)
    times = {name: collections.Counter() for name in models}
    calls = {name: collections.Counter() for name in models}
    for _ in range(args.repeats):
        for name in models:
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as trace:
                step(name)
            for event in trace.key_averages(group_by_input_shape=True):
                if event.key.startswith("aten::"):
                    times[name][category(event)] += event.self_cpu_time_total / 1e3 / args.repeats
                    calls[name][category(event)] += event.count / args.repeats
    first, second = args.models
    total = {name: sum(times[name].values()) for name in models}
    print(f"{args.mode} batch {args.batch}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; ms per step (sum of ATen self times):")
    print(f"total: {first} {total[first]:.1f}, {second} {total[second]:.1f}, "
          f"ratio {total[first] / total[second]:.3f}\n")
    print(f"| op | {first} ms | {second} ms | difference | % of {second} | calls |")
    print("|---|---|---|---|---|---|")
    ops = set(times[first]) | set(times[second])
    for op in sorted(ops, key=lambda o: times[second][o] - times[first][o])[: args.rows]:
        a, b = times[first][op], times[second][op]
        print(f"| {op} | {a:.1f} | {b:.1f} | {a - b:+.1f} | {100 * (a - b) / total[second]:+.1f}% "
              f"| {calls[first][op]:.0f}/{calls[second][op]:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
