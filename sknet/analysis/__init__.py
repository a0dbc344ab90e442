"""Attention versus object size: the analysis of Section 4.4 (Figures 3 and 4), for SK units and
the family's other selection units (split attention, LSK).

Modules by job: :mod:`~sknet.analysis.stimulus` (the enlarged central object),
:mod:`~sknet.analysis.kinds` (the kinds of selection unit and what is contrasted in each),
:mod:`~sknet.analysis.capture` (selection units and a hook on their attention),
:mod:`~sknet.analysis.statistics` (streamed sums), :mod:`~sknet.analysis.report` (the numbers and
their text), :mod:`~sknet.analysis.tables` (JSON and CSV files), :mod:`~sknet.analysis.figures`
(Figures 3a-c and 4), :mod:`~sknet.analysis.spatial` (LSK units: the selection on the object and
around it) and :mod:`~sknet.analysis.run`, whose :func:`analyze` runs them on trained
weights and writes everything to a folder (see ``docs/analysis.md``).
"""

from sknet.analysis.capture import (
    capture,
    capture_attention,
    default_class_units,
    default_unit,
    selecting_units,
    stage_units,
    stages,
)
from sknet.analysis.report import branch_label, classes_rising, format_findings
from sknet.analysis.run import FILES, SAMPLE_SEED, SPATIAL_FILES, analyze
from sknet.analysis.statistics import CHANNEL_GROUP, AttentionStatistics, default_channel_group
from sknet.analysis.stimulus import SCALES, crop_side, enlarge, scale_label
from sknet.analysis.tables import channel_rows, class_rows, unit_rows

__all__ = [
    "CHANNEL_GROUP",
    "FILES",
    "SAMPLE_SEED",
    "SCALES",
    "SPATIAL_FILES",
    "AttentionStatistics",
    "analyze",
    "branch_label",
    "capture",
    "capture_attention",
    "channel_rows",
    "class_rows",
    "classes_rising",
    "crop_side",
    "default_channel_group",
    "default_class_units",
    "default_unit",
    "enlarge",
    "format_findings",
    "scale_label",
    "selecting_units",
    "stage_units",
    "stages",
    "unit_rows",
]
