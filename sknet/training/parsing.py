"""Setting values from text, bounded: YAML (``--config`` files, ``--model-kwargs``) without
anchors or aliases, numbers and sizes from flags, and a value checked against a type annotation.

:mod:`sknet.training.config` applies them to the fields of ``TrainConfig``; nothing here knows a
setting by name.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from sknet.errors import UserError
from sknet.preprocessing import check_size

MAX_CONFIG_BYTES = 1_000_000
"""The largest ``--config`` file (and ``--model-kwargs``/``--preprocessing`` value) read: settings
are a few lines, and a bound keeps a wrong file from taking the memory."""

MAX_NESTING = 32
"""How deeply a settings file may nest lists and mappings."""

_FLOAT_1_2 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+))$""",
    re.X,
)
"""Floats that YAML 1.1 reads as text but YAML 1.2 (and people) as numbers: ``1e-4``, ``5E-5``."""


class _Refused(yaml.YAMLError):
    """A YAML construct settings do not take, said in one line."""


class SettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader for settings, bounded: no anchors or aliases (``&a``, ``*a``, ``<<``:
    an alias bomb expands a small file into gigabytes, a self-reference recurses without end),
    at most :data:`MAX_NESTING` levels deep, and ``1e-4`` read as a number."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(
                f"line {line}: YAML anchors and aliases (&name, *name, <<) are not accepted in "
                "settings; write the values out"
            )
        if self._depth >= MAX_NESTING:
            raise _Refused(f"line {line}: nested deeper than {MAX_NESTING} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


SettingsLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


def load_yaml(text: str, where: str) -> Any:
    """The value of the YAML ``text`` under :class:`SettingsLoader`; failures in one line that
    starts with ``where``."""
    if len(text) > MAX_CONFIG_BYTES:
        raise UserError(f"{where}: longer than {MAX_CONFIG_BYTES:,} characters; settings are short")
    loader = SettingsLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as error:
        raise UserError(f"{where}: {error}") from None
    except (yaml.YAMLError, ValueError) as error:  # ValueError: e.g. an integer of 5,000 digits
        raise UserError(f"{where}: not valid YAML ({error})".replace("\n", " ")) from None
    finally:
        loader.dispose()


def parse_mapping(text: str) -> dict:
    """A YAML mapping such as ``'{attention: false}'``."""
    value = load_yaml(text, repr(text) if len(text) <= 80 else "the value")
    if not isinstance(value, dict):
        raise UserError(f"expected a mapping like '{{attention: 0}}': {text[:80]!r}")
    return value


def parse_numbers(kind: type) -> Callable[[str], list]:
    """A parser of numbers of type ``kind`` separated by commas or spaces: ``"0.3,0.6,0.9"``."""

    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.replace(",", " ").split()]
        except ValueError:
            raise UserError(
                f"expected {kind.__name__}s separated by commas, got {text!r}"
            ) from None

    parse.__name__ = f"{kind.__name__}s"
    return parse


def parse_sizes(text: str) -> list[int]:
    """Input sides separated by commas or spaces, each within the bounds of
    :func:`~sknet.preprocessing.check_size`: ``"224,320"``."""
    return [check_size(size, "sizes") for size in parse_numbers(int)(text)]


def parse_size(text: str) -> int:
    """One input side within the bounds of :func:`~sknet.preprocessing.check_size`."""
    try:
        size = int(text)
    except ValueError:
        raise UserError(f"expected an integer number of pixels, got {text!r}") from None
    return check_size(size, "the size")


_NONE = type(None)


class TypeMismatch(Exception):
    """A value that is not of the type a setting takes."""


def describe_type(hint: Any) -> str:
    """A type annotation in words, for messages: ``int | None`` is "an integer or null"."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        named = " or ".join(describe_type(arg) for arg in args if arg is not _NONE)
        return named + (" or null" if _NONE in args else "")
    if typing.get_origin(hint) in (list, tuple):
        return f"a list of {_PLURALS.get(args[0], describe_type(args[0]))}"
    if typing.get_origin(hint) in (dict, Mapping):
        return "a mapping of names to values"
    return _WORDS.get(hint, getattr(hint, "__name__", str(hint)))


_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "text",
          Any: "any value"}
_PLURALS = {int: "integers", float: "finite numbers", str: "texts"}


def converted(value: Any, hint: Any) -> Any:
    """``value`` as a setting of type ``hint`` (an integer where a number is due becomes a
    float, a tuple a list, a ``pathlib.Path`` where text is due its text); raises
    :class:`TypeMismatch` where it is not one. Booleans are not numbers and numbers are not
    text."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        for arg in args:
            if arg is not _NONE:
                with contextlib.suppress(TypeMismatch):
                    return converted(value, arg)
        raise TypeMismatch
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is Any or (hint in (bool, str) and isinstance(value, hint)):
        return value
    if hint is str and isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if hint is int and number and isinstance(value, int):
        return value
    if hint is float and number:
        with contextlib.suppress(OverflowError):  # an integer beyond any float
            if math.isfinite(value):
                return float(value)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        return [converted(item, args[0]) for item in value]
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        return {converted(key, args[0]): converted(item, args[1]) for key, item in value.items()}
    raise TypeMismatch
