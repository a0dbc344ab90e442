"""What the experiment scripts share: runs of ``sknet.training.train`` repeated over seeds, their
summary as mean and spread, and the files that keep them with the command that made them."""

from __future__ import annotations

import contextlib
import csv
import io
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sknet.atomic import write_json, write_text
from sknet.training import train


def quiet_train(out: Path, **settings: Any) -> dict[str, Any]:
    """One training run into ``out`` (replaced), its per-epoch log silenced; its summary."""
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.redirect_stderr(io.StringIO()):
        started = time.perf_counter()
        summary = train(out=str(out), **settings)
    return {**summary, "wall_seconds": time.perf_counter() - started}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(value) for value in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def summarise(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str], metric: str
) -> list[dict[str, Any]]:
    """Per combination of ``keys``: the runs' ``metric`` as mean, std, min, max and count."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(float(row[metric]))
    table = []
    for combination, values in groups.items():
        mean, std = mean_std(values)
        table.append({
            **dict(zip(keys, combination, strict=True)), "runs": len(values),
            f"{metric}_mean": round(mean, 3), f"{metric}_std": round(std, 3),
            f"{metric}_min": min(values), f"{metric}_max": max(values),
        })
    return table


def write_results(
    out: Path, rows: list[dict[str, Any]], table: list[dict[str, Any]], extra: Mapping[str, Any]
) -> None:
    """``runs.csv`` (one row per run), ``summary.csv`` and ``results.json`` (both, the command,
    ``extra``) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, data in (("runs.csv", rows), ("summary.csv", table)):
        buffer = io.StringIO()
        columns = list(dict.fromkeys(key for row in data for key in row))
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(data)
        write_text(out / name, buffer.getvalue())
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    write_json(out / "results.json", {"command": command, **extra, "summary": table, "runs": rows})


def markdown(table: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``table`` as a Markdown table of ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[column]) for column in columns) + " |" for row in table]
    return "\n".join(lines)

