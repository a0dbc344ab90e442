"""Stopping a run on a signal without losing it: SIGTERM (what a cluster scheduler sends before it
kills a job) and SIGINT (Ctrl-C).

While :meth:`~sknet.training.loop.Trainer.fit` runs, the first of these signals only raises a
flag (:class:`StopSignals`); at the next step boundary every process agrees to stop (the flags
are summed over the processes, so all stop at the same step), rank 0 writes ``last.pt`` as a
mid-epoch checkpoint would, says how to resume, and the run ends with :class:`RunStopped`
(the command line exits 143 for SIGTERM, 130 for SIGINT). The previous handlers are back after
the first signal, so a second one acts at once.
"""

from __future__ import annotations

import shlex
import signal
import threading
from types import FrameType
from typing import Any

from sknet.devices import Processes, all_sum

SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop a run cleanly."""


class RunStopped(KeyboardInterrupt):
    """The run stopped on a signal after writing a resumable ``last.pt``.

    Attributes:
        status: the exit status the command line returns: 128 + the signal's number (143 for
            SIGTERM, 130 for SIGINT).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.status = 128 + signum


class StopSignals:
    """A context manager that turns SIGTERM and SIGINT into a request to stop.

    Installed only in the main thread (Python delivers signals there) and only for signals that
    are not ignored; the previous handlers come back after the first signal and on exit.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self.received = None
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        self._restore()

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def agreed(self, processes: Processes) -> int | None:
        """The signal that stops every process at this step boundary, or ``None``: one
        all-reduce under torchrun (call it at the same steps on every process); SIGTERM wins."""
        local = [float(self.received == signum) for signum in SIGNALS]
        if processes.world_size > 1:
            local = all_sum(local, processes)
        for signum, count in zip(SIGNALS, local, strict=True):
            if count:
                return signum
        return None


def stop_message(signum: int, where: str, checkpoint: str, processes: Processes) -> str:
    """The one line a stopped run ends with: what stopped it, where, and how to resume."""
    launcher = " (launched by torchrun as before)" if processes.world_size > 1 else ""
    return (
        f"stopped by {signal.Signals(signum).name} {where}; saved {checkpoint}; resume with: "
        f"sknet train --resume {shlex.quote(checkpoint)}{launcher}"
    )
