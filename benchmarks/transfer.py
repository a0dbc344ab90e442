#!/usr/bin/env python
"""Transfer on real digits: train on digits 0-4, fine-tune on 5-9 from a few labels per class.

The source network is ``sknet_digits`` trained with the default recipe on digits 0-4 (721
images). Each target task is digits 5-9 with N labelled training images per digit (the first N of
the fixed split), validated on all 180 validation images of 5-9. Per N and seed it trains:

* ``scratch``: the network from He initialisation, as many steps as the fine-tuning run;
* ``fine-tune``: ``--pretrained`` the source (the fine-tuning defaults: the recipe's learning rate
  everywhere, at least 300 steps);
* ``fine-tune, backbone lr x0.1``: ``--backbone-lr-scale 0.1``;
* ``fine-tune, freeze conv3``: ``--freeze conv3`` (only the last stage and the classifier learn).

The figure is the validation top-1 error after the last epoch (no selection on the validation
set; the best epoch's is written too). Everything goes to ``--out``: ``runs.csv``,
``summary.csv``, ``results.json`` (with the command) and the Markdown table printed at the end.

    python benchmarks/transfer.py                     # N = 5, 10, 25; seeds 0-4 (about 6 min)
    python benchmarks/transfer.py --labels 10 --seeds 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from repeat import markdown, quiet_train, summarise, write_results

VARIANTS = {
    "scratch": {},
    "fine-tune": {},
    "fine-tune, backbone lr x0.1": {"backbone_lr_scale": 0.1},
    "fine-tune, freeze conv3": {"freeze": "conv3"},
}
"""Settings of each arm on top of the shared ones (the fine-tuning arms add ``pretrained``)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[5, 10, 25], metavar="N",
                        help="labelled training images per digit of 5-9 (default 5 10 25)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1 per arm (default 5)")
    parser.add_argument("--batch-size", type=int, default=10, help="every arm's batch (10)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/transfer"),
                        help="results folder (default benchmarks/transfer)")
    parser.add_argument("--source-epochs", type=int, default=None,
                        help="epochs of the source run (default: the digits recipe's 15)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        metavar="ARM", help=f"arms to run (default all: {', '.join(VARIANTS)})")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    work = args.out / "work"
    source_settings = {} if args.source_epochs is None else {"epochs": args.source_epochs}
    source = quiet_train(work / "source", data="digits:0-4", **source_settings)
    print(f"source: sknet_digits on digits 0-4, val top-1 err {source['top1_err']:.2f}% "
          f"({source['wall_seconds']:.0f} s)", flush=True)
    rows = []
    for labels in args.labels:
        data = f"digits:5-9:{labels}"
        for seed in range(args.seeds):
            epochs = None
            arms = [arm for arm in VARIANTS if arm != "scratch"] + ["scratch"]
            for arm in (arm for arm in arms if arm in args.variants):
                settings = {"data": data, "seed": seed, "batch_size": args.batch_size,
                            **VARIANTS[arm]}
                if arm == "scratch":
                    settings["epochs"] = epochs  # the fine-tuning runs' length (None: recipe's)
                else:
                    settings["pretrained"] = str(work / "source")
                summary = quiet_train(work / "run", **settings)
                epochs = summary["epochs"] if arm != "scratch" else epochs
                rows.append({
                    "labels_per_digit": labels, "arm": arm, "seed": seed,
                    "epochs": summary["epochs"], "last_top1_err": summary["last_top1_err"],
                    "best_top1_err": summary["top1_err"],
                    "seconds": round(summary["wall_seconds"], 1),
                })
                print(f"N={labels} seed {seed} {arm}: last-epoch error "
                      f"{summary['last_top1_err']:.2f}%", flush=True)
    table = summarise(rows, ["labels_per_digit", "arm"], "last_top1_err")
    best = {(r["labels_per_digit"], r["arm"]): r for r in summarise(
        rows, ["labels_per_digit", "arm"], "best_top1_err")}
    for row in table:
        row["best_top1_err_mean"] = best[(row["labels_per_digit"], row["arm"])][
            "best_top1_err_mean"]
    seconds = time.perf_counter() - started
    write_results(args.out, rows, table, {
        "source_top1_err": source["top1_err"], "seconds": round(seconds),
    })
    print(markdown(table, ["labels_per_digit", "arm", "runs", "last_top1_err_mean",
                           "last_top1_err_std", "last_top1_err_min", "last_top1_err_max",
                           "best_top1_err_mean"]))
    print(f"{len(rows)} runs in {seconds:.0f} s; files in {args.out}")


if __name__ == "__main__":
    main()
