"""Interrupting a training run right after one of its checkpoints, to test exact resume."""

import pytest

from sknet.training import Trainer


class CrashAfterCheckpoint:
    """Make every run raise ``KeyboardInterrupt`` just after it writes its ``count``-th checkpoint.

    ``calls`` lists ``(epoch, step)`` of each checkpoint written since patching (clear it to count
    afresh); :meth:`stop` restores the trainer.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.calls: list[tuple[int, int]] = []
        self._monkeypatch = monkeypatch
        self._save = save = Trainer._checkpoint

        def save_then_crash(trainer: Trainer) -> None:
            save(trainer)
            self.calls.append((trainer.progress.epoch, trainer.progress.step))
            if len(self.calls) == count:
                raise KeyboardInterrupt

        monkeypatch.setattr(Trainer, "_checkpoint", save_then_crash)

    def stop(self) -> None:
        """Checkpoints are written without crashing again."""
        self._monkeypatch.setattr(Trainer, "_checkpoint", self._save)
