"""Preemption: turn the scheduler's warning signal into a checkpoint at the end of the current step.

SLURM (through submitit) sends SIGUSR2 before a preemption or time-out, and SIGTERM on ``scancel``. The training
loop notes the signal, ORs the note into its per-step loss all-reduce (so every rank saves at the same step), writes
a checkpoint, then hands the signal to the handler installed before: submitit's requeue, or the default (terminate).
Without it a preempted job loses up to ``ckpt_every`` steps.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

from study.common import get_logger

__all__ = ["PreemptionSave"]

log = get_logger(__name__)


class PreemptionSave:
    """Context manager: ``requested`` is 1.0 once a watched signal arrived; ``hand_over()`` delivers it on."""

    SIGNALS = ("SIGUSR2", "SIGTERM")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionSave":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _note(self, signum: int, frame: Any) -> None:
        self.signum = signum
        log.warning("received %s: saving a checkpoint at the end of this step", signal.Signals(signum).name)

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    @property
    def requested(self) -> float:
        return 0.0 if self.signum is None else 1.0

    def hand_over(self) -> None:
        """Deliver the noted signal to the previous handler; if that returns, keep watching."""
        signum, self.signum = self.signum, None
        if signum is None:  # another rank was signalled: it hands over, this one saved with it
            return
        previous = self._previous.get(signum)
        self._restore()
        if callable(previous):
            previous(signum, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)
        self.__enter__()
