"""Stop signals: SIGUSR2 (SLURM's warning before a time limit or pre-emption), SIGTERM and SIGINT only set a flag;
the training loop saves at the next step boundary (with several ranks, at the next step where they compare flags)."""

from __future__ import annotations

import contextlib
import signal

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """Signal handlers that only record the signal; the loop acts on it at a step boundary."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signals, self.received, self._previous = signals, None, {}

    def __enter__(self):
        for sig in self.signals:
            with contextlib.suppress(ValueError):  # not in the main thread: no handlers, no flag
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
