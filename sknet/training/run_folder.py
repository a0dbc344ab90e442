"""Which run an output folder holds, and whether a run may write there.

Every run gets a random id when it starts (:func:`new_run_id`), kept in ``last.pt`` (the
training state, ``"run_id"``), ``summary.json`` and as the first line of ``config.yaml`` (a YAML
comment, so the file stays a valid ``--config``). A new run refuses a folder that holds another
run; a resumed run writes into its own folder, or into a new one, but never over a different run.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from sknet.devices import Processes, gather
from sknet.errors import UserError
from sknet.models.resume_file import read_checkpoint
from sknet.training.run_lock import RunLock

RESULTS = ("summary.json", "best.safetensors", "best.json", "metrics.csv")
"""What a run leaves behind beside ``last.pt`` and ``config.yaml``."""
ID_FILES = ("last.pt", "config.yaml", "summary.json")
"""The files that record their run's id."""
RUN_FILES = ("last.pt", "config.yaml", *RESULTS)
"""Every file that tells that a folder holds a run."""
CONFIG_HEADER = "# sknet run {run_id}: the resolved settings, a valid --config file\n"
"""The first line of ``config.yaml``."""
_HEADER = re.compile(r"# sknet run ([0-9a-f]+):")


class FolderHoldsAnotherRun(UserError):
    """The output folder holds files of a different run."""


def new_run_id() -> str:
    """A fresh random run id (16 hex digits)."""
    return uuid.uuid4().hex[:16]


def run_id_of(path: Path) -> str | None:
    """The run id that one of a run's files records, or ``None`` (none recorded: an older run,
    or a file that cannot be read)."""
    try:
        if path.name == "last.pt":
            return read_checkpoint(path).get("run_id")
        if path.name == "summary.json":
            return json.loads(path.read_text(encoding="utf-8")).get("run_id")
        if path.name == "config.yaml":
            with path.open(encoding="utf-8") as file:
                match = _HEADER.match(file.readline())
            return match.group(1) if match else None
    except (UserError, OSError, ValueError, AttributeError):
        return None
    return None


def _same_folder(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return first.resolve() == second.resolve()


def claim(out: Path, run_id: str | None, checkpoint: Path | None) -> list[str]:
    """Check that a run may write into ``out``; returns what the log should say.

    Args:
        out: the output folder.
        run_id: the resumed run's id (``None``: a new run, or a checkpoint that records none).
        checkpoint: the resumed ``last.pt`` (``None``: a new run).

    Raises:
        UserError: a new run into a folder that holds a run, or a resumed one into a folder that
            holds another run's files.
    """
    present = [name for name in RUN_FILES if (out / name).exists()]
    if checkpoint is None:
        if "last.pt" in present:
            raise UserError(
                f"{out} already holds a run (last.pt); continue it with --resume "
                f"{out / 'last.pt'} or choose another --out"
            )
        results = [name for name in present if name in RESULTS]
        if results:
            raise FolderHoldsAnotherRun(
                f"{out} holds the results of another run ({', '.join(results)}) but no last.pt "
                "to resume it; choose another --out (or move those files away)"
            )
        if present:
            return [f"replacing {out / 'config.yaml'} of a run that stopped before its first "
                    "checkpoint"]
        return []
    if _same_folder(checkpoint.parent, out):
        return []
    recorded = [name for name in present if name in ID_FILES]
    for name in recorded or present[:1]:  # results alone: a run of unknown id
        found = run_id_of(out / name) if name in ID_FILES else None
        if run_id is None or found != run_id:
            theirs = f"run {found}" if found else "a run of unknown id"
            ours = f"run {run_id}" if run_id else "a run of unknown id"
            raise FolderHoldsAnotherRun(
                f"--out {out} holds another run ({name}: {theirs}) than {checkpoint} "
                f"({ours}); resume into the checkpoint's own folder (no --out) or an empty one"
            )
    return [f"the run of {checkpoint} continues in {out}"]


def claim_folder(
    lock: RunLock,
    command: str,
    run_id: str | None,
    checkpoint: Path | None,
    processes: Processes,
) -> list[str]:
    """Lock the output folder (rank 0 only: the other ranks write nothing) and :func:`claim` it;
    every process raises the same one-line refusal. Returns what the log should say."""
    notes: list[str] = []
    refusal: UserError | None = None
    if processes.main:
        try:
            lock.acquire(command)
            notes = claim(lock.path.parent, run_id, checkpoint)
        except UserError as error:
            refusal = error
    message = gather(None if refusal is None else str(refusal), processes)[0]
    if refusal is not None:
        raise refusal
    if message is not None:
        raise UserError(message)
    return notes
