#!/usr/bin/env python
"""Table 7 on real digits of known size: which kernels, and whether selecting between them helps.

Trains each variant on ``--data`` (default ``scaled-mnist``: 4,000 MNIST digits of heights 8-28 px
on a 32-pixel canvas, 1,000 validation digits each at six heights) with one recipe, for every seed:

* Table 7's rows on ``sknet_digits`` (``sknet.models.zoo_digits.TABLE7_VARIANTS``): one 3x3
  (``K3``), one 3x3 with dilation 2 (``K5``, the paper's "5x5"), their plain sum, SK over both (the
  registered model), SK over three (+ dilation 3);
* the ResNeXt and SENet counterparts at matched multiply-adds (``resnext_digits``,
  ``senet_digits``);
* the selective-kernel family at matched multiply-adds: split attention (``resnest_digits``,
  ResNeSt's unit in place of SK's) and LSK (``lsknet_digits``, a small LSKNet).

For each run: parameters, multiply-adds at the canvas size, the validation top-1 error after the
last epoch (no selection on the validation set) and that error per true object height. The runs
with selection units are also analysed (``sknet analyze``), and the slope of their attention
against object height is kept per unit: for SK the difference large minus small kernel, for split
attention last minus first split (one kernel), for LSK the share of the larger kernel on the
object, on the background and their difference (``docs/analysis.md``). Written to ``--out``:
``runs.csv``, ``summary.csv``, ``results.json`` (with the command), ``ablation.png``; the Markdown
table is printed at the end.

    python benchmarks/ablation.py                       # 9 variants x 3 seeds, 7 epochs each
    python benchmarks/ablation.py --seeds 5 --device cuda   # more seeds on a GPU
    python benchmarks/ablation.py --variants "K3+K5 SK" "ResNeSt (matched)" "LSKNet (matched)"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from repeat import markdown, mean_std, quiet_train, summarise, write_results
from torch.utils.data import DataLoader

import sknet
from sknet.analysis import analyze
from sknet.analysis.kinds import unit_kind
from sknet.analysis.report import difference_label
from sknet.analysis.sizes import bin_of, size_bins
from sknet.analysis.spatial import FORMAT as SPATIAL_FORMAT
from sknet.atomic import atomic_path
from sknet.data import collate
from sknet.devices import THREADS_HELP, pick_device, torch_threads
from sknet.models.zoo_digits import TABLE7_VARIANTS
from sknet.trained import open_trained

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    **{label: ("sknet_digits", kwargs) for label, kwargs in TABLE7_VARIANTS.items()},
    "ResNeXt (matched)": ("resnext_digits", {}),
    "SENet (matched)": ("senet_digits", {}),
    "ResNeSt (matched)": ("resnest_digits", {}),
    "LSKNet (matched)": ("lsknet_digits", {}),
}
"""Label -> (registered model, keyword overrides)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="scaled-mnist",
                        help="a --data spec of recorded object sizes (default scaled-mnist)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 (default 3)")
    parser.add_argument("--epochs", type=int, default=7, help="epochs per run (default 7)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        metavar="NAME", help=f"variants (default all: {', '.join(VARIANTS)})")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ablation"),
                        help="results folder (default benchmarks/ablation)")
    return parser.parse_args()


@torch.inference_mode()
def errors_by_size(run: Path, device: str) -> tuple[list[float], list[float]]:
    """The heights the validation digits were drawn at (one bin each, around it) and the last
    epoch's top-1 error (%) in each bin."""
    trained = open_trained(run / "last.pt")
    preprocessing = trained.preprocessing()
    model = trained.model.to(pick_device(device))
    loader = DataLoader(
        trained.source.val_set(preprocessing.input_size, preprocessing), batch_size=256,
        collate_fn=collate,
    )
    wrong = []
    for images, targets, _ in loader:
        predictions = model(images.to(next(model.parameters()).device)).argmax(1).cpu()
        wrong.append(predictions != targets)
    heights, grid = trained.source.val_sizes[:, 0], trained.source.val_size_grid
    bins = size_bins(heights, grid)
    index, wrong = bin_of(heights, bins), torch.cat(wrong).double()
    errors = [100 * wrong[index == position].mean().item() for position in range(len(bins))]
    return [float(height) for height in grid], errors


def attention_slopes(report: dict[str, Any]) -> tuple[str, dict[str, float | None]]:
    """What the analysis measured and its slope against height per series: per unit (SK, split
    attention), or per unit and region (LSK: ``SK_1_1/object``, ...)."""
    units = report["sizes"]["units"]
    if report["format"] == SPATIAL_FORMAT:
        measure = "share of the larger kernel (LSK)"
        return measure, {f"{unit}/{region}": values["slope"]
                         for unit, regions in units.items() for region, values in regions.items()}
    return difference_label(report), {unit: values["slope"] for unit, values in units.items()}


def main() -> None:
    args = parse_args()
    with torch_threads(args.threads):
        run_all(args)


def run_all(args: argparse.Namespace) -> None:
    """Every variant and seed, then the files and the printed table."""
    started = time.perf_counter()
    work = args.out / "work"
    rows, slopes, measures, bins = [], {}, {}, None
    for label in args.variants:
        name, kwargs = VARIANTS[label]
        with torch.device("meta"):
            model = sknet.create_model(name, **kwargs)
        selects = any(unit_kind(unit) for unit in model.sk_units().values())
        for seed in range(args.seeds):
            run = work / f"{name}-{label.replace(' ', '_').replace('+', '')}-{seed}"
            summary = quiet_train(run, data=args.data, model=name, model_kwargs=kwargs,
                                  seed=seed, epochs=args.epochs, device=args.device,
                                  threads=args.threads)
            size = summary["input_size"]
            bins, by_size = errors_by_size(run, args.device)
            row = {
                "variant": label, "model": name, "seed": seed, "params": summary["params"],
                "mmacs": round(sknet.profile_model(model, size, 1).counted("sk") / 1e6, 2),
                "last_top1_err": summary["last_top1_err"], "best_top1_err": summary["top1_err"],
                **{f"err_h{height:g}": round(error, 2) for height, error in zip(
                    bins, by_size, strict=True)},
                "seconds": round(summary["wall_seconds"], 1),
            }
            if selects:
                report = analyze(run / "last.pt", out=run / "analysis", progress=False)
                measures[label], fitted = attention_slopes(report)
                for series, slope in fitted.items():
                    slopes.setdefault(label, {}).setdefault(series, []).append(slope)
                    row[f"slope_{series}"] = slope
            rows.append(row)
            print(f"{label} seed {seed}: {row['last_top1_err']:.2f}% "
                  f"({row['seconds']:.0f} s)", flush=True)
    table = summarise(rows, ["variant"], "last_top1_err")
    for entry in table:
        mine = [row for row in rows if row["variant"] == entry["variant"]]
        entry["params"], entry["mmacs"] = mine[0]["params"], mine[0]["mmacs"]
        for height in bins:
            key = f"err_h{height:g}"
            entry[key] = round(mean_std([row[key] for row in mine])[0], 2)
    slope_table = {
        label: {unit: dict(zip(("mean", "std"), mean_std(values), strict=True))
                for unit, values in units.items()}
        for label, units in slopes.items()
    }
    seconds = time.perf_counter() - started
    write_results(args.out, rows, table, {
        "data": args.data, "epochs": args.epochs, "device": args.device,
        "threads": args.threads, "heights": bins,
        "attention_slope_per_px": slope_table, "attention_measure": measures,
        "seconds": round(seconds),
    })
    plot(table, bins, args.out / "ablation.png", args.data)
    columns = ["variant", "params", "mmacs", "runs", "last_top1_err_mean", "last_top1_err_std",
               *(f"err_h{height:g}" for height in bins)]
    print(markdown(table, columns))
    for label, units in slope_table.items():
        shown = ", ".join(
            f"{unit} {10 * v['mean']:+.4f} ± {10 * v['std']:.4f}" for unit, v in units.items()
        )
        print(f"{label}: slope per 10 px of height of the {measures[label]} (mean ± std over "
              f"seeds): {shown}")
    print(f"{len(rows)} runs in {seconds / 60:.1f} min; files in {args.out}")


def plot(table: list[dict[str, Any]], bins: list[float], path: Path, data: str) -> None:
    """Validation error per true height, one line per variant (means over seeds)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.8), layout="constrained")
    axes = figure.subplots()
    for position, entry in enumerate(table):
        values = [entry[f"err_h{height:g}"] for height in bins]
        axes.plot(bins, values, marker="o", color=f"C{position}",
                  label=f"{entry['variant']} ({entry['last_top1_err_mean']:.2f}%)")
    axes.set_xlabel("object height (pixels, as drawn; every validation digit at each)")
    axes.set_ylabel("validation top-1 error (%), mean over seeds")
    axes.set_title(f"Variants on {data}, by object size")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


if __name__ == "__main__":
    main()
