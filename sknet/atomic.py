"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed onto it.

A reader (or a run killed with ``kill -9`` halfway through a write) therefore only ever sees the
previous complete file or the new complete file, never a truncated one.

A write that fails for a reason the user can fix (a full disk, a read-only or foreign folder, a
folder where a file should be) fails as a one-line :class:`~sknet.errors.UserError` naming the
file, what went wrong and that the previous file is intact; :func:`check_writable` refuses such
places before any work is done.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sknet.errors import UserError

USER_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS,
    errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
})
"""Failures of a write that the user can fix (space, permissions, a file where a folder goes)."""

STOPPED_SHORT = (
    "No space left on device", "StorageFull", "unexpected pos", "PytorchStreamWriter failed",
    "file write failed",
)
"""What writers that do not raise ``OSError`` (torch's zip writer, safetensors) say when a write
stops short: in practice a full disk."""


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _device(folder: Path) -> str:
    """The mount point holding ``folder``, said with the folder: where space ran out."""
    mount = _existing(folder)
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    if mount == Path(os.path.abspath(folder)):
        return str(mount)
    return f"the device of {folder} (mounted at {mount})"


def _kept(target: Path) -> str:
    if target.is_file():
        return f"the previous {target.name} is intact"
    return f"nothing was written to {target}"


def write_failure(error: BaseException, target: Path) -> UserError | None:
    """The one-line error for a failed write of ``target``, or ``None`` where ``error`` is not
    something the user can fix (then it keeps its traceback)."""
    if isinstance(error, UserError):
        return None
    folder, kept = target.parent, _kept(target)
    if isinstance(error, OSError) and error.errno in USER_ERRNOS:
        code = error.errno
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            what = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded",
                    errno.EFBIG: "file too large for the file system"}[code]
            return UserError(
                f"{what} on {_device(folder)} while writing {target}; {kept}; free some space "
                "there (or write elsewhere) and run again"
            )
        if code == errno.EROFS:
            return UserError(
                f"cannot write {target}: {folder} is on a read-only file system; {kept}; "
                "write to another folder"
            )
        if code in (errno.EACCES, errno.EPERM):
            return UserError(
                f"cannot write {target}: permission denied in {folder}; {kept}; write to a "
                "folder you may write to"
            )
        blocking = _existing(folder)
        if not blocking.is_dir():
            return UserError(
                f"cannot write {target}: {blocking} is a file, not a folder; choose another path"
            )
        if target.is_dir():
            return UserError(f"cannot write {target}: it is a folder; name a file to write")
        return None
    if not isinstance(error, OSError) and any(marker in str(error) for marker in STOPPED_SHORT):
        message = str(error).strip().splitlines()[0][:120]
        return UserError(
            f"writing {target} stopped short ({message}): most likely no space left on "
            f"{_device(folder)}; {kept}; free some space there and run again"
        )
    return None


def check_writable(path: str | os.PathLike, flag: str, *, folder: bool) -> None:
    """Refuse up front, in one line, a ``flag`` target that cannot be written: a file where a
    folder is expected (``folder=True``) or a folder where a file is, a path through a file, or
    a place that is read-only or not ours. A missing folder is fine (it is created)."""
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise UserError(f"{flag} {target}: is a file, not a folder; name a folder (it is created)")
    if not folder and target.is_dir():
        raise UserError(f"{flag} {target}: is a folder; name the file to write in it")
    existing = _existing(target if folder else target.parent)
    if not existing.is_dir():
        raise UserError(f"{flag} {target}: {existing} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {target}: {existing} is not writable (read-only or not yours); choose a "
            "folder you may write to"
        )


def describe(error: OSError) -> str | None:
    """One line for an ``OSError`` the user can fix, met outside :func:`atomic_path`."""
    if error.errno not in USER_ERRNOS:
        return None
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}; check the path, its permissions and free space"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, move it onto ``path``.

    If the block raises, the temporary file is removed and ``path`` is left untouched; a failure
    the user can fix (:func:`write_failure`) becomes a one-line :class:`UserError`.
    """
    target = Path(path)
    temporary = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            yield temporary
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temporary, target)
        except Exception as error:
            failure = write_failure(error, target)
            if failure is None:
                raise
            raise failure from error
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def printable(text: str) -> str:
    """``text`` (a path, or a line naming one) as any file or terminal takes it: the bytes of a
    file name that are not UTF-8 (which Python carries as lone surrogates, ``"bad\\udcff.jpg"``)
    written as ``\\xff`` escapes (``bad\\xff.jpg``), as ``skipped_files.txt`` and the log lines
    show them."""
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` by ``text`` in UTF-8 (file names that are not UTF-8 written as
    :func:`printable` writes them)."""
    with atomic_path(path) as temporary:
        temporary.write_text(printable(text), encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically replace ``path`` by ``data`` as indented JSON."""
    write_text(path, json.dumps(data, indent=2) + "\n")
