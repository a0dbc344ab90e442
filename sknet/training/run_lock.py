"""One run per output folder: an exclusive OS lock on ``OUT/.lock``, held for the whole run.

The lock is ``flock`` on the file (exclusive, non-blocking): a second run into the same folder is
refused in one line that names the process holding it (its pid and command, written into the
file once locked). The kernel drops the lock with the process that holds it, so a run killed
with ``kill -9`` leaves a stale file that the next run simply takes over. Under torchrun, rank 0
alone locks (the other ranks write nothing).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from sknet.errors import UserError

LOCK_NAME = ".lock"
"""The lock file inside the output folder (removed when the run ends normally)."""


_HELD: set[int] = set()
"""The descriptors of the locks this process holds."""


def _forget_in_child() -> None:
    """A forked child (a data-loader worker) closes its copies of the held locks' descriptors,
    so that the lock lives exactly as long as the run's process, not as long as its workers."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class FolderInUse(UserError):
    """Another live process holds the output folder's lock."""


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (``pid N: COMMAND``)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        holder = json.loads(text)
        command = " ".join(str(holder["command"]).split())  # one line
        return f"pid {int(holder['pid'])}: {command}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said which yet"


class RunLock:
    """The lock of the output folder ``out``; :meth:`acquire` takes it, :meth:`release` frees it.

    Args:
        out: the run's output folder (created by :meth:`acquire` if missing, and removed again by
            :meth:`release` if the run left it empty).
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out) / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, command: str) -> None:
        """Take the lock and record this process's pid and ``command`` in it.

        Raises:
            FolderInUse: a live process holds it (the message names it).
        """
        folder = self.path.parent
        self._created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise FolderInUse(
                    f"{folder} is in use by another run ({holder}); wait for it to end, stop it, "
                    "or choose another --out"
                ) from None
            # A holder that just ended removed the file it locked: lock the one that is there.
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "command": command}) + "\n").encode(), 0)
        self._fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        """Free the lock and remove its file (and the folder, if this run made it and left it
        empty); nothing if it is not held."""
        if self._fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # still locked: nobody can have locked this file meanwhile
            if self._created:
                with contextlib.suppress(OSError):
                    self.path.parent.rmdir()  # only if empty
        finally:
            _HELD.discard(self._fd)
            os.close(self._fd)  # frees the lock
            self._fd = None
