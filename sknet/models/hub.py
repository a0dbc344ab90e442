"""Weights by Hugging Face hub id: ``hf-hub:ORG/NAME`` (``@REVISION`` optional), as timm names them.

An id resolves, through the ``huggingface_hub`` package (the optional extra ``sknet[hub]``), to
the folder that holds the repository's ``config.json`` and weights in the local Hugging Face
cache, the one timm already fills: offline (``HF_HUB_OFFLINE=1``) from the cache alone, online
downloading what is missing. :func:`sknet.models.locate.locate` then reads that folder like any
other (timm's files or ours). ``create_model(name, pretrained=True)`` takes the hub id its
registry entry names (timm's published weights of the same network).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from typing import Any

from sknet.errors import UserError

PREFIX = "hf-hub:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""What a hub repository's weights may be called, in order of preference (as timm saves them)."""


def is_hub_id(location: Any) -> bool:
    """Whether ``location`` is a hub id (``hf-hub:ORG/NAME[@REVISION]``) rather than a path."""
    return isinstance(location, str) and location.startswith(PREFIX)


def parse_hub_id(location: str) -> tuple[str, str | None]:
    """``(ORG/NAME, revision or None)`` of ``hf-hub:ORG/NAME[@REVISION]``."""
    repo, _, revision = location.removeprefix(PREFIX).partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or (revision == "" and "@" in location):
        raise UserError(
            f"{location}: a hub id is hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION, e.g. "
            "hf-hub:timm/skresnext50_32x4d.ra_in1k"
        )
    return repo, revision or None


def _hub() -> Any:
    try:
        return importlib.import_module("huggingface_hub")
    except ImportError:
        raise UserError(
            "hub ids (hf-hub:...) need the huggingface_hub package: pip install 'sknet[hub]'"
        ) from None


def hub_folder(location: str) -> Path:
    """The local folder of hub id ``location`` (its ``config.json`` and weights), fetched into
    the Hugging Face cache if online and missing.

    Raises:
        sknet.errors.UserError: no ``huggingface_hub``, a malformed id, or files neither in the
            cache nor downloadable, in one line naming the id, the cache and how to fetch them.
    """
    repo, revision = parse_hub_id(location)
    hub = _hub()
    errors = importlib.import_module("huggingface_hub.errors")
    constants = importlib.import_module("huggingface_hub.constants")
    missing = (
        errors.LocalEntryNotFoundError, errors.EntryNotFoundError,
        errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.HfHubHTTPError,
        OSError,
    )
    weights = None
    for name in WEIGHT_FILES:
        try:
            weights = Path(hub.hf_hub_download(repo, name, revision=revision))
            break
        except missing:
            continue
    if weights is None:
        offline = " (offline: HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        fetch = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
        raise UserError(
            f"{location}: no {' or '.join(WEIGHT_FILES)} of {repo}"
            f"{'@' + revision if revision else ''} in the Hugging Face cache "
            f"{os.fspath(constants.HF_HUB_CACHE)}{offline} nor on the hub; fetch it with "
            f"`{fetch}` where the hub is reachable, or pass a path"
        )
    with contextlib.suppress(*missing):  # without it: a bare state dict, read as timm's weights
        hub.hf_hub_download(repo, "config.json", revision=revision)
    return weights.parent
