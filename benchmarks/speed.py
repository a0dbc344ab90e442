#!/usr/bin/env python
"""Speed and memory of SKNet-50 against ResNeXt-50 (ours and timm's), or of one family member
against its peer (``--family``), in one interleaved run.

Measures, for our ``sknet50`` and ``resnext50_32x4d`` and timm's ``skresnext50_32x4d`` and
``resnext50_32x4d`` (timm's are skipped if timm is not installed), or with ``--family resnest``
our ``resnest50d`` and timm's, or with ``--family lsk`` our ``lsknet_s`` and the official LSKNet-S
written out in plain PyTorch:

* inference in eval mode and (ours only) deploy mode (``sknet.deploy``: BN folded), per batch size;
* one training step (forward, cross-entropy, backward, SGD with momentum);
* the peak memory of a training step above what was allocated before it, each model in a fresh
  process (CPU: tensor bytes from the profiler's allocation trace; GPU:
  ``torch.cuda.max_memory_allocated``);

each eagerly and under ``torch.compile``, and for channels_last inputs. Every timed call of every
model is interleaved with the others' (rounds, each in a rotated order) and the table reports the
median over rounds; the ratios in brackets are the quartiles of the per-round ratios, a measure of
the noise. ``--json`` writes every sample with the machine, versions and command.

CPU (the defaults): ``python benchmarks/speed.py --json benchmarks/cpu.json``
The family, CPU eval and train at batch 8:
``python benchmarks/speed.py --family resnest --kinds eval train --compile none --infer-batches 8``
GPU (AMP bf16, batch 256, CUDA events; about 4 minutes on one H200, results written after every
task; the compiled training step, which takes minutes more to compile there, with
``--compiled-kinds eval train``):
``python benchmarks/speed.py --device cuda --json benchmarks/gpu.json``
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measuring import QUIET, ROOT, Result, Task, machine, timer, versions

import sknet

sys.path.insert(0, str(ROOT / "tests"))
from lsknet_reference import S_CONFIG, OfficialLSKNet

LITERAL_CONFIGS = {"lsknet_s": S_CONFIG}
"""Literal networks by our model name (their sizes, from the reference the tests hold)."""

FAMILIES: dict[str, dict[str, dict]] = {
    "sk": {
        "models": {
            "ours:sknet50": ("ours", "sknet50", "ours SK"),
            "ours:resnext50_32x4d": ("ours", "resnext50_32x4d", "ours RX"),
            "timm:skresnext50_32x4d": ("timm", "skresnext50_32x4d", "timm SK"),
            "timm:resnext50_32x4d": ("timm", "resnext50_32x4d", "timm RX"),
        },
        "ratios": {
            "ours SK/RX": ("ours:sknet50", "ours:resnext50_32x4d"),
            "timm SK/RX": ("timm:skresnext50_32x4d", "timm:resnext50_32x4d"),
            "timm SK/ours SK": ("timm:skresnext50_32x4d", "ours:sknet50"),
            "timm RX/ours RX": ("timm:resnext50_32x4d", "ours:resnext50_32x4d"),
        },
    },
    "resnest": {
        "models": {
            "ours:resnest50d": ("ours", "resnest50d", "ours ResNeSt"),
            "timm:resnest50d": ("timm", "resnest50d", "timm ResNeSt"),
        },
        "ratios": {"timm/ours ResNeSt": ("timm:resnest50d", "ours:resnest50d")},
    },
    "lsk": {
        "models": {
            "ours:lsknet_s": ("ours", "lsknet_s", "ours LSKNet-S"),
            "literal:lsknet_s": ("literal", "lsknet_s", "literal LSKNet-S"),
        },
        "ratios": {"literal/ours LSKNet-S": ("literal:lsknet_s", "ours:lsknet_s")},
    },
}
"""What ``--family`` compares: the models (source, name, short label) and the table's ratio
columns, time (or memory) of the first model over the second's. ``sk``: SKNet-50 against
ResNeXt-50, ours and timm's; ``resnest``: our ResNeSt-50d against timm's; ``lsk``: our LSKNet-S
against the official network written out literally in plain PyTorch
(``tests/lsknet_reference.py``, the reference the equivalence tests load the official
checkpoints into)."""
MODELS: dict[str, tuple[str, str, str]] = {}
RATIOS: dict[str, tuple[str, str]] = {}
"""The chosen family's models and ratios (set by :func:`parse_args`)."""


KINDS = ["eval", "deploy", "train", "memory"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults depend on --device. CPU: inference batches 1 and 8, training batch 8, "
        "memory batch 16, fp32, every model also compiled (about 40 minutes on 2 cores). CUDA: "
        "batch 256, AMP bf16, CUDA events, only ours compiled and only for eval, the compiled "
        "tasks last (about 4 minutes on an H200: compiling a training step there takes minutes "
        "more; add it with --compiled-kinds eval train).",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads on CPU (default: all cores)")
    parser.add_argument("--family", choices=list(FAMILIES), default="sk",
                        help="which comparison (default sk: SKNet-50 vs ResNeXt-50, ours and "
                        "timm's; resnest: ResNeSt-50d ours vs timm's; lsk: LSKNet-S ours vs the "
                        "literal official network)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="a subset of the family's models (default: all of them)")
    parser.add_argument("--infer-batches", type=int, nargs="+", default=None)
    parser.add_argument("--train-batch", type=int, default=None)
    parser.add_argument("--memory-batch", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per task (default: CPU 15, CUDA 20)")
    parser.add_argument("--compile", choices=["none", "ours", "all"], default=None,
                        help="which models also run under torch.compile")
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS,
                        help="which kinds of task to run (default: all)")
    parser.add_argument("--compiled-kinds", nargs="+", default=None, choices=KINDS,
                        help="which kinds also run compiled (default: CPU all, CUDA eval)")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="skip the channels_last eval/train tasks")
    parser.add_argument("--amp", choices=["none", "bf16"], default=None,
                        help="autocast dtype (default: CPU none, CUDA bf16)")
    parser.add_argument("--json", type=Path, default=None, help="write all samples here")
    parser.add_argument("--memory-worker", nargs=2, metavar=("MODEL", "COMPILED"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    family = FAMILIES[args.family]
    MODELS.clear()
    MODELS.update(family["models"])
    RATIOS.clear()
    RATIOS.update(family["ratios"])
    args.models = args.models or list(MODELS)
    unknown = [model for model in args.models if model not in MODELS]
    if unknown:
        parser.error(f"--models {' '.join(unknown)}: not in --family {args.family} "
                     f"({', '.join(MODELS)})")
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    args.infer_batches = args.infer_batches or ([256] if cuda else [1, 8])
    args.train_batch = args.train_batch or (256 if cuda else 8)
    args.memory_batch = args.memory_batch or (256 if cuda else 16)
    args.repeats = args.repeats or (20 if cuda else 15)
    args.compile = args.compile or ("ours" if cuda else "all")
    args.compiled_kinds = args.compiled_kinds or (["eval"] if cuda else KINDS)
    args.amp = args.amp or ("bf16" if cuda else "none")
    args.threads = args.threads or os.cpu_count()
    return args


def build(model: str, device: str, channels_last: bool) -> nn.Module | None:
    """A freshly initialised model, or None when its library is missing."""
    source, name, _ = MODELS[model]
    if source == "ours":
        net = sknet.create_model(name)
    elif source == "literal":
        net = OfficialLSKNet(**LITERAL_CONFIGS[name])
    else:
        try:
            import timm
        except ImportError:
            return None
        net = timm.create_model(name, pretrained=False)
    net = net.to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def autocast(args: argparse.Namespace):
    enabled = args.amp == "bf16"
    return torch.autocast(args.device, dtype=torch.bfloat16, enabled=enabled)


def make_step(net: nn.Module, task: Task, args: argparse.Namespace) -> Callable[[], None]:
    """The timed callable of ``task`` for one model (compiled if asked)."""
    device = args.device
    memory_format = torch.channels_last if task.channels_last else torch.contiguous_format
    x = torch.randn(task.batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    if task.kind in ("eval", "deploy"):
        net = sknet.deploy(net) if task.kind == "deploy" else net.eval()
        forward = torch.compile(net) if task.compiled else net

        def infer() -> None:
            with torch.inference_mode(), autocast(args):
                forward(x)

        return infer
    net.train()
    forward = torch.compile(net) if task.compiled else net
    labels = torch.randint(0, 1000, (task.batch,), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

    def train() -> None:
        with autocast(args):
            loss = F.cross_entropy(forward(x), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train


def run_timed(task: Task, models: list[str], args: argparse.Namespace) -> Result:
    """Warm every model up (compiling it if asked), then time interleaved rounds."""
    result = Result(task, "s")
    if task.compiled:
        # Our models share one forward code object (so do timm's): without a reset, dynamo's
        # per-code cache of compiled graphs fills up across tasks and silently runs eager.
        torch._dynamo.reset()
    steps = {}
    for model in models:
        reason = skip_reason(model, task, args)
        if reason:
            result.skipped[model] = reason
            continue
        net = build(model, args.device, task.channels_last)
        if net is None:
            result.skipped[model] = "timm is not installed"
            continue
        steps[model] = make_step(net, task, args)
        for _ in range(2):  # compilation, oneDNN primitive creation, allocator warm-up
            steps[model]()
    measure = timer(args.device)
    order = list(steps)
    for round_index in range(args.repeats):
        shift = round_index % len(order)
        for model in order[shift:] + order[:shift]:
            seconds, others = measure(steps[model])
            result.samples.setdefault(model, []).append(seconds)
            result.others.setdefault(model, []).append(others)
    del steps
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return result


def skip_reason(model: str, task: Task, args: argparse.Namespace) -> str | None:
    source = MODELS[model][0]
    if task.kind == "deploy" and source != "ours":
        return "no deploy mode"
    if task.compiled and args.compile == "ours" and source != "ours":
        return "compile only ours (--compile ours)"
    return None


def run_memory(task: Task, models: list[str], args: argparse.Namespace) -> Result:
    """Each model's training-step memory, in a fresh process of this script."""
    result = Result(task, "bytes")
    for model in models:
        reason = skip_reason(model, task, args)
        if reason:
            result.skipped[model] = reason
            continue
        command = [
            sys.executable, __file__, "--memory-worker", model, str(int(task.compiled)),
            "--family", args.family,
            "--device", args.device, "--memory-batch", str(task.batch),
            "--image-size", str(args.image_size), "--threads", str(args.threads),
            "--amp", args.amp,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            result.skipped[model] = f"worker failed: {done.stderr.strip().splitlines()[-1:]}"
            continue
        report = json.loads(lines[-1])
        if report.get("skipped"):
            result.skipped[model] = report["skipped"]
        else:
            result.samples[model] = [report["peak_bytes"]]
    return result


def memory_worker(args: argparse.Namespace) -> None:
    """Print (as JSON) the peak memory of one training step above what was allocated before it.

    A first step compiles, creates the momentum buffers and warms the allocator; the second is
    measured. On CPU the peak comes from the profiler's trace of every tensor allocation and
    free (exact and repeatable, unlike the resident set size, which depends on the C allocator);
    on a GPU from ``torch.cuda.max_memory_allocated``.
    """
    model, compiled = args.memory_worker[0], args.memory_worker[1] == "1"
    torch.manual_seed(0)
    net = build(model, args.device, False)
    if net is None:
        print(json.dumps({"skipped": "timm is not installed"}))
        return
    step = make_step(net, Task("train", args.memory_batch, compiled), args)
    step()
    gc.collect()
    if args.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as trace:
            step()
        changes = sorted(
            (event.start_ns(), event.nbytes())
            for event in trace.profiler.kineto_results.events()
            if event.name() == "[memory]"
        )
        peak = level = 0
        for _, nbytes in changes:
            level += nbytes
            peak = max(peak, level)
    print(json.dumps({"peak_bytes": peak}))


def tasks(args: argparse.Namespace) -> list[Task]:
    compile_flags = [False] if args.compile == "none" else [False, True]
    planned = []
    for compiled in compile_flags:
        for kind in ("eval", "deploy"):
            planned += [Task(kind, batch, compiled) for batch in args.infer_batches]
        planned.append(Task("train", args.train_batch, compiled))
    if not args.no_channels_last:
        planned.append(Task("eval", max(args.infer_batches), False, channels_last=True))
        planned.append(Task("train", args.train_batch, False, channels_last=True))
    planned += [Task("memory", args.memory_batch, compiled) for compiled in compile_flags]
    planned = [t for t in planned if not t.compiled or t.kind in args.compiled_kinds]
    if args.device == "cuda":  # the eager tasks first: compiling takes minutes on a GPU machine
        planned.sort(key=lambda t: t.compiled)
    return [task for task in planned if task.kind in args.kinds]


def ratio_cell(result: Result, first: str, second: str, quiet: bool) -> str:
    """Ratio of the medians, with the quartiles of the per-round ratios (the noise)."""
    rounds = result.rounds((first, second), quiet)
    if not rounds:
        return "-"
    ratio = statistics.median(a for a, _ in rounds) / statistics.median(b for _, b in rounds)
    if len(rounds) < 2:
        return f"{ratio:.3f}"
    q = statistics.quantiles([a / b for a, b in rounds], n=4)
    return f"{ratio:.3f} [{q[0]:.2f}-{q[2]:.2f}]" + (f" n={len(rounds)}" if quiet else "")


def format_table(results: list[Result], quiet: bool) -> str:
    """One row per task: the ratios, then each model's median (from quiet rounds if asked)."""
    header = ["task", *RATIOS, *(short for _, _, short in MODELS.values())]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [result.task.label]
        for first, second in RATIOS.values():
            cells.append(ratio_cell(result, first, second, quiet and result.unit == "s"))
        for model in MODELS:
            value = result.median(model, quiet and result.unit == "s")
            if value is None:
                cells.append("-")
            elif result.unit == "s":
                cells.append(f"{value * 1000:.0f} ms")
            else:
                cells.append(f"{value / 2**20:.0f} MiB")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    path: Path, results: list[Result], started: datetime.datetime, command: str,
    args: argparse.Namespace,
) -> None:
    """Every sample so far, with the machine, versions, command and tables, written atomically."""
    report = {
        "date": started.isoformat(),
        "command": command,
        "machine": machine(args.device),
        "versions": versions(),
        "settings": {k: str(v) for k, v in vars(args).items() if k != "memory_worker"},
        "table": format_table(results, quiet=False),
        "quiet_table": format_table(results, quiet=True) if args.device == "cpu" else None,
        "results": [
            {**asdict(r), "task": {**asdict(r.task), "label": r.task.label}} for r in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(report, indent=1))
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # every model gets its fastest kernels
    if args.memory_worker:
        memory_worker(args)
        return 0
    started = datetime.datetime.now(datetime.timezone.utc)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"{started:%Y-%m-%d %H:%M} UTC, {machine(args.device)}, {versions()}\n$ {command}",
          flush=True)
    results = []
    for task in tasks(args):
        begin = time.perf_counter()
        runner = run_memory if task.kind == "memory" else run_timed
        results.append(runner(task, args.models, args))
        print(f"{task.label}: {time.perf_counter() - begin:.0f} s", file=sys.stderr, flush=True)
        print(format_table(results[-1:], quiet=False).splitlines()[-1], flush=True)
        if args.json:  # after every task: a run stopped by a time limit keeps what it measured
            write_report(args.json, results, started, command, args)
    print("\nAll rounds (median; [quartiles of the per-round ratios]):")
    print(format_table(results, quiet=False))
    if args.device == "cpu":
        print(
            f"\nQuiet rounds only (other processes used <= {QUIET:.0%} of the CPU during every "
            "sample of the round; n = rounds):\n" + format_table(results, quiet=True)
        )
    skipped = {r.task.label: r.skipped for r in results if r.skipped}
    if skipped:
        print(f"\nskipped: {skipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
