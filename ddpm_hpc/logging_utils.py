"""Progress output: a live bar on a terminal, plain lines in batch logs (SLURM output files)."""

from __future__ import annotations

import os
import sys
import time


def interactive() -> bool:
    return sys.stdout.isatty()


def log(message: str) -> None:
    """Print one line; on a terminal, above the live progress bar (which is cleared, then drawn again below it)."""
    bar = Progress.drawn
    if bar:
        bar.clear()
    print(message, flush=True)
    if bar:
        bar.redraw()


class _SurvivesClosedPipe:
    """``sys.stdout`` whose reader may go away (``ddpm-hpc train ... | head``): from then on the output goes to
    /dev/null and the command carries on (a training run, a submission halfway through), instead of dying of a
    BrokenPipeError."""

    def __init__(self, stream):
        self._stream = stream

    def _discard(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # also where the buffered rest and the flush at exit go
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def survive_closed_stdout() -> None:
    """Make a closed stdout harmless for the rest of this process (the command line calls it first)."""
    if not isinstance(sys.stdout, _SurvivesClosedPipe):
        sys.stdout = _SurvivesClosedPipe(sys.stdout)


class Progress:
    """``Progress(total, label)(done, text)``: redraws one line on a terminal, prints nothing otherwise
    (callers log plain lines at their own cadence; :func:`log` prints them above the bar)."""

    drawn: Progress | None = None  # the bar now on the terminal's last line, if any

    def __init__(self, total: int, label: str, start: int = 0, unit: str = "steps"):
        self.total, self.label, self.start, self.unit = total, label, start, unit
        self.t0 = time.monotonic()
        self.enabled = interactive()
        self.line = ""

    def __call__(self, done: int, text: str = "") -> None:
        if not self.enabled:
            return
        rate = (done - self.start) / max(time.monotonic() - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0
        width = 24
        filled = int(width * done / max(self.total, 1))
        self.line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                     f"{text + ' ' if text else ''}{rate:.1f} {self.unit}/s eta {format_seconds(eta)}")
        self.redraw()
        if done >= self.total:
            self.close()

    def redraw(self) -> None:
        sys.stdout.write(f"\r{self.line}   ")
        sys.stdout.flush()
        Progress.drawn = self

    def clear(self) -> None:
        sys.stdout.write("\r" + " " * (len(self.line) + 3) + "\r")

    def close(self) -> None:
        """End the bar's line, once (the next output starts below it)."""
        if Progress.drawn is self:
            sys.stdout.write("\n")
            sys.stdout.flush()
            Progress.drawn = None


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"