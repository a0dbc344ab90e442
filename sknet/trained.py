"""Trained weights opened for a task: the network, its record and the dataset to feed it.

``sknet eval``, ``analyze``, ``export`` and ``predict`` read weights only through here, and here
only through the one loader (:func:`sknet.models.factory.load`): a training run's folder, a
weights folder, an ``X.safetensors`` file, a training ``last.pt`` or timm's files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from sknet.atomic import printable
from sknet.data import Source, open_data
from sknet.errors import UserError
from sknet.models.factory import load
from sknet.preprocessing import Preprocessing, resolve_preprocessing
from sknet.record import ModelRecord

LOG = logging.getLogger("sknet")
"""Where opening a dataset for evaluation says what it left out."""


@dataclass
class Trained:
    """A trained network ready for evaluation, and the dataset it is to be fed.

    Attributes:
        path: the file read (``best.safetensors``, ``model.safetensors``, ``X.safetensors`` or
            ``last.pt``).
        model: the network on the CPU, in eval mode.
        record: what was saved with it (:class:`~sknet.record.ModelRecord`).
        data: the ``--data`` spec in use.
        source: that dataset, opened.
    """

    path: Path
    model: nn.Module
    record: ModelRecord
    data: str
    source: Source

    @property
    def input_size(self) -> int:
        """The size the weights were trained (or recorded) at, else the dataset's own."""
        return self.preprocessing().input_size

    def preprocessing(self, size: int | None = None) -> Preprocessing:
        """How to feed the network at ``size`` (default: its own): the weights' recorded
        preprocessing over the dataset's default
        (:func:`~sknet.preprocessing.resolve_preprocessing`)."""
        recorded = self.record.preprocessing
        default_size = (
            recorded.input_size if recorded
            else self.record.extra.get("input_size") or self.source.native_size or 224
        )
        dataset = self.source.preprocessing(size or default_size)
        return resolve_preprocessing(dataset, recorded, size=size or default_size)


def load_trained(
    weights: str | os.PathLike, flag: str = ""
) -> tuple[Path, nn.Module, ModelRecord]:
    """Load trained weights for inference (``eval``, ``analyze``, ``export``, ``predict``).

    Args:
        weights: anything :mod:`sknet.models.locate` reads.
        flag: the option ``weights`` came from (e.g. ``--checkpoint``), for error messages.

    Returns:
        ``(path, model, record)``: the file read, the network on the CPU in eval mode, and its
        record.

    Raises:
        FileNotFoundError: nothing loadable at ``weights``.
        sknet.errors.UserError: unreadable or foreign files.
    """
    loaded = load(weights, flag=flag)
    return loaded.path, loaded.model.eval(), loaded.record


def open_trained(
    weights: str | os.PathLike, data: str | None = None, flag: str = ""
) -> Trained:
    """Load trained weights and open the dataset to evaluate them on (``eval``, ``analyze``).

    Args:
        weights: anything :func:`load_trained` takes.
        data: ``--data`` spec (default: the dataset recorded with the weights).
        flag: the option ``weights`` came from (e.g. ``--checkpoint``), for error messages.

    Raises:
        FileNotFoundError: nothing loadable at ``weights``.
        sknet.errors.UserError: unreadable files, or a dataset whose classes do not fit the
            classifier (:meth:`~sknet.record.ModelRecord.classes_fit`).
    """
    path, model, record = load_trained(weights, flag)
    data = data or record.extra.get("dataset")
    if not data:
        raise UserError(f"{path}: the weights do not record their dataset; pass --data")
    source = open_data(data, for_training=False)
    if not record.classes_fit(source.class_names):
        names = source.class_names
        if len(names) != record.num_classes:
            raise UserError(
                f"{path} classifies {record.num_classes} classes but --data {data} has "
                f"{len(names)}; use the dataset it was trained on"
            )
        raise UserError(
            f"{path}: its class names ({', '.join(record.class_names[:3])}, ...) differ from "
            f"those of --data {data} ({', '.join(names[:3])}, ...)"
        )
    if source.skipped:  # not images, empty, links to folders: said, as training says it
        first = source.skipped[0]
        LOG.warning(printable(
            f"--data {data}: left out {len(source.skipped)} path(s) that are not image files, "
            f"e.g. {first.path} ({first.reason})"
        ))
    return Trained(path, model, record, data, source)
