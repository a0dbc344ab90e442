"""The analysis tables: ``analysis.json`` and the rows of ``units.csv``, ``channels.csv``,
``classes.csv`` and (objects of known size) ``sizes.csv``; for LSK units ``regions.csv``
(docs/analysis.md describes every column)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sknet.analysis.sizes import SIZE_COLUMNS, size_rows
from sknet.analysis.spatial import REGION_COLUMNS, spatial_rows
from sknet.analysis.statistics import number
from sknet.atomic import printable, write_json, write_text

REPORT_FILE = "analysis.json"
UNITS_TABLE = "units.csv"
CHANNELS_TABLE = "channels.csv"
CLASSES_TABLE = "classes.csv"
SIZES_TABLE = "sizes.csv"
REGIONS_TABLE = "regions.csv"
CHANNEL_TABLES = (REPORT_FILE, UNITS_TABLE, CHANNELS_TABLE, CLASSES_TABLE)
"""What :func:`write_tables` writes (SK and split-attention units); :data:`SIZES_TABLE` too where
the report has sizes."""
SPATIAL_TABLES = (REPORT_FILE, REGIONS_TABLE)
"""What :func:`write_spatial_tables` writes (LSK units)."""


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    table = io.StringIO()
    writer = csv.DictWriter(table, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return printable(table.getvalue())  # class (folder) names of any encoding


def _sources(report: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """``("all", None)``, then ``("sample_a", sample)`` and ``("sample_b", sample)``."""
    return [("all", None)] + [
        ("sample_" + sample["figure"][-1], sample) for sample in report["samples"]
    ]


UNIT_COLUMNS = [
    "source", "index", "unit", "channels", "receptive_fields", "scale", "crop", "images",
    "diff_mean", "diff_std", "change_mean", "change_std", "rising",
]
"""``units.csv``; then ``branch{m}_rf``, ``branch{m}_mean``, ``branch{m}_std`` for m = 1..M."""


def unit_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``units.csv``: per source (all images, each sample), unit and scale."""
    rows = []
    for source, sample in _sources(report):
        for name, unit in report["units"].items():
            summary = [row for row in report["summary"] if row["unit"] == name]
            for position, scale in enumerate(report["scales"]):
                row: dict[str, Any] = {
                    "source": source, "index": "" if sample is None else sample["index"],
                    "unit": name, "channels": unit["channels"],
                    "receptive_fields": " ".join(map(str, unit["receptive_fields"])),
                    "scale": scale, "crop": report["crops"][position],
                }
                if sample is None:
                    stats = summary[position]
                    row.update({key: stats[key] for key in UNIT_COLUMNS[7:]})
                    means, stds = stats["branch_mean"], stats["branch_std"]
                else:
                    differences = sample["diff"][name]
                    change = number(differences[position] - differences[0])
                    row.update({
                        "images": 1, "diff_mean": differences[position], "diff_std": "",
                        "change_mean": change, "change_std": "", "rising": int(change > 0),
                    })
                    means = sample["branch_mean"][name][position]
                    stds = [""] * len(means)
                for branch, receptive_field in enumerate(unit["receptive_fields"]):
                    row[f"branch{branch + 1}_rf"] = receptive_field
                    row[f"branch{branch + 1}_mean"] = means[branch]
                    row[f"branch{branch + 1}_std"] = stds[branch]
                rows.append(row)
    return rows


CHANNEL_COLUMNS = ["source", "index", "unit", "scale", "channel", "branch", "receptive_field",
                   "mean", "std"]
CLASS_COLUMNS = ["unit", "scale", "class_index", "class_name", "images", "diff_mean", "diff_std"]


def channel_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``channels.csv``: the chosen unit's attention per channel and branch."""
    name = report["unit"]
    fields_ = report["units"][name]["receptive_fields"]
    rows = []
    for source, sample in _sources(report):
        means = report["channels"]["mean"] if sample is None else sample["channels"]
        for position, scale in enumerate(report["scales"]):
            for branch, receptive_field in enumerate(fields_):
                for channel, mean in enumerate(means[position][branch]):
                    std = report["channels"]["std"][position][branch][channel]
                    rows.append({
                        "source": source, "index": "" if sample is None else sample["index"],
                        "unit": name, "scale": scale, "channel": channel, "branch": branch + 1,
                        "receptive_field": receptive_field, "mean": mean,
                        "std": std if sample is None else "",
                    })
    return rows


def class_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``classes.csv``: per unit, scale and class, the mean difference over its images."""
    classes = report["classes"]
    rows = []
    for name, values in classes["units"].items():
        for position, scale in enumerate(report["scales"]):
            for index, class_name in enumerate(classes["names"]):
                rows.append({
                    "unit": name, "scale": scale, "class_index": index,
                    "class_name": class_name, "images": int(classes["images"][index]),
                    "diff_mean": values["mean"][position][index],
                    "diff_std": values["std"][position][index],
                })
    return rows


def write_tables(report: dict[str, Any], out: Path) -> None:
    branches = max(len(unit["receptive_fields"]) for unit in report["units"].values())
    unit_columns = UNIT_COLUMNS + [
        f"branch{branch}_{what}" for branch in range(1, branches + 1)
        for what in ("rf", "mean", "std")
    ]
    write_json(out / REPORT_FILE, report)
    write_text(out / UNITS_TABLE, _csv(unit_rows(report), unit_columns))
    write_text(out / CHANNELS_TABLE, _csv(channel_rows(report), CHANNEL_COLUMNS))
    write_text(out / CLASSES_TABLE, _csv(class_rows(report), CLASS_COLUMNS))
    if report.get("sizes"):
        write_text(out / SIZES_TABLE, _csv(size_rows(report["sizes"]), SIZE_COLUMNS))



def write_spatial_tables(report: dict[str, Any], out: Path) -> None:
    """``analysis.json`` and ``regions.csv`` of an LSK analysis."""
    write_json(out / REPORT_FILE, report)
    write_text(out / REGIONS_TABLE, _csv(spatial_rows(report), REGION_COLUMNS))
