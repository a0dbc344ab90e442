"""The model record: what a network is and how it is fed, the one description every file keeps.

A :class:`ModelRecord` is made by :func:`sknet.create_model` (``model.record``), follows
``reset_classifier``, and is written identically into ``config.json`` / ``best.json`` and
``last.pt``; every consumer (``eval``, ``analyze``, ``predict``, ``export``, training and
fine-tuning) reads it from there. How a network is run is not part of it: train or eval mode,
``features_only``, frozen BatchNorm (``create_model(..., frozen_norm=True)``, which keeps the
weights and whose saved weights load into the plain network).

Class names are known or they are not: weights saved without names record ``null``, never
placeholders. The one rule for them (:meth:`ModelRecord.classes_fit`): a dataset fits the
classifier when it has as many classes and, where the weights record names, the same names in
the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sknet.errors import UserError
from sknet.preprocessing import Preprocessing

FORMAT = "sknet-pretrained"
FORMAT_VERSION = 2
"""``config.json``: version 2 records unknown class names as ``null`` and the pixel scale of the
preprocessing; version 1 files are read too (their placeholder names ``"0", "1", ...`` as null)."""

MAX_CLASSES = 1_000_000
"""The largest classifier a record may ask for (a guard against typos that would allocate
terabytes before any check)."""


class RecordError(UserError):
    """A record that cannot describe a model (one line, naming the file)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


@dataclass(frozen=True)
class ModelRecord:
    """A network's description: enough to build it again, label its outputs and feed it.

    Attributes:
        name: the registered model name.
        kwargs: overrides of the registered config (``create_model(name, **kwargs)``).
        num_classes: classifier outputs (0: pooled features).
        class_names: one per output, or ``None`` where nobody said which classes they are.
        preprocessing: how its inputs are prepared, or ``None`` where nobody said.
        extra: facts about where the weights come from (the dataset, evaluation sizes, the best
            epoch and its error, an imported architecture, ...), JSON values.
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_classes: int = 1000
    class_names: tuple[str, ...] | None = None
    preprocessing: Preprocessing | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise RecordError(
                f"{len(self.class_names)} class names for {self.num_classes} classes"
            )

    def with_classes(
        self, num_classes: int, class_names: Sequence[str] | None = None
    ) -> ModelRecord:
        """The record of the same network with a new classifier of ``num_classes`` outputs."""
        names = None if class_names is None else tuple(str(name) for name in class_names)
        return replace(self, num_classes=num_classes, class_names=names)

    def classes_fit(self, class_names: Sequence[str]) -> bool:
        """Whether a dataset with ``class_names`` fits this classifier: the same count and, where
        names are recorded, the same names in the same order."""
        if len(class_names) != self.num_classes:
            return False
        return self.class_names is None or list(self.class_names) == list(class_names)

    def to_json(self) -> dict[str, Any]:
        """What ``config.json`` (and ``last.pt``'s ``"record"``) holds."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "kwargs": _jsonable(self.kwargs),
            "num_classes": self.num_classes,
            "class_names": None if self.class_names is None else list(self.class_names),
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_json(),
            **_jsonable(self.extra),
        }

    @classmethod
    def from_json(cls, values: Any, where: str) -> ModelRecord:
        """Read and check a record (``config.json``, ``last.pt``'s ``"record"``).

        Raises:
            RecordError: not a record, a newer format, or a value of the wrong type or out of
                range, naming ``where`` and the key.
        """
        if not isinstance(values, Mapping) or values.get("format") != FORMAT:
            raise RecordError(f"{where}: not an sknet weights config (format is not {FORMAT})")
        version = values.get("format_version")
        check_version(version, FORMAT_VERSION, where)
        missing = {"model", "kwargs", "num_classes"} - set(values)
        if missing:
            raise RecordError(f"{where}: config lacks {', '.join(sorted(missing))}")
        name, kwargs, classes = values["model"], values["kwargs"], values["num_classes"]
        if not isinstance(name, str) or not name:
            raise RecordError(f"{where}: model must be a model name, got {name!r}")
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise RecordError(f"{where}: kwargs must be a mapping of names, got {kwargs!r}")
        if isinstance(classes, bool) or not isinstance(classes, int):
            raise RecordError(f"{where}: num_classes must be an integer, got {classes!r}")
        if not 0 <= classes <= MAX_CLASSES:
            raise RecordError(f"{where}: num_classes must be in 0..{MAX_CLASSES}, got {classes}")
        names = values.get("class_names")
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise RecordError(f"{where}: class_names must be a list of names or null")
            if len(names) != classes:
                raise RecordError(
                    f"{where}: {len(names)} class names for num_classes {classes}"
                )
            if version == 1 and names == [str(index) for index in range(classes)]:
                names = None  # version 1 wrote placeholders for weights without names
        preprocessing = Preprocessing.from_json(values.get("preprocessing"), where)
        known = {"format", "format_version", "model", "kwargs", "num_classes", "class_names",
                 "preprocessing"}
        extra = {key: value for key, value in values.items() if key not in known}
        return cls(
            name, dict(kwargs), classes, None if names is None else tuple(names), preprocessing,
            extra,
        )


def check_version(version: Any, supported: int, where: str) -> None:
    """Refuse a file whose format version is missing, malformed or newer than ``supported``."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError(f"{where}: no valid format version ({version!r}); the file is damaged")
    if version > supported:
        raise RecordError(
            f"{where}: written in format version {version}, newer than the {supported} this "
            "sknet reads; upgrade sknet (pip install -U sknet)"
        )
