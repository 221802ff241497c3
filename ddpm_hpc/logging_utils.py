"""Progress output: a live bar on a terminal, plain lines in batch logs (SLURM output files)."""

from __future__ import annotations

import sys
import time


def interactive() -> bool:
    return sys.stdout.isatty()


def log(message: str) -> None:
    print(message, flush=True)


class Progress:
    """``Progress(total, label)(done, text)``: redraws one line on a terminal, prints nothing otherwise
    (callers log plain lines at their own cadence when not interactive)."""

    def __init__(self, total: int, label: str, start: int = 0):
        self.total, self.label, self.start = total, label, start
        self.t0 = time.monotonic()
        self.enabled = interactive()

    def __call__(self, done: int, text: str = "") -> None:
        if not self.enabled:
            return
        rate = (done - self.start) / max(time.monotonic() - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0
        width = 24
        filled = int(width * done / max(self.total, 1))
        sys.stdout.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                         f"{text} {rate:.1f}/s eta {format_seconds(eta)}   ")
        sys.stdout.flush()
        if done >= self.total:
            sys.stdout.write("\n")

    def close(self) -> None:
        if self.enabled:
            sys.stdout.write("\n")
            sys.stdout.flush()


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
