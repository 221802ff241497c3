"""What ``make doctor`` prints and keeps: checks marked ok / warning / problem, and the JSON answer files in
``experiments/_doctor/`` (read back as JSON only)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ddpm_hpc import paths
from ddpm_hpc.safe_write import atomic_write

OK, WARNING, PROBLEM = "ok", "warning", "problem"
_MARK = {OK: "ok     ", WARNING: "WARNING", PROBLEM: "PROBLEM"}


@dataclass(frozen=True)
class Check:
    status: str  # ok | warning | problem
    topic: str  # what was checked: "torch", "partition debug", "slurm.gres", ...
    message: str  # what was found
    fix: str = ""  # what to change (warnings and problems)

    def line(self) -> str:
        text = f"{_MARK[self.status]}  {self.topic}: {self.message}"
        return text + (f"\n         -> {self.fix}" if self.fix else "")


def ok(topic: str, message: str) -> Check:
    return Check(OK, topic, message)


def warning(topic: str, message: str, fix: str = "") -> Check:
    return Check(WARNING, topic, message, fix)


def problem(topic: str, message: str, fix: str = "") -> Check:
    return Check(PROBLEM, topic, message, fix)


def worst(checks: list[Check]) -> str:
    statuses = {c.status for c in checks}
    return PROBLEM if PROBLEM in statuses else WARNING if WARNING in statuses else OK


def summary(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARNING, PROBLEM)}
    return f"{counts[PROBLEM]} problem(s), {counts[WARNING]} warning(s), {counts[OK]} ok"


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]


def doctor_dir() -> Path:
    """``experiments/_doctor``: '_' keeps it out of experiment listings and reports."""
    return paths.experiments_root() / "_doctor"


def new_stamp(folder: Path) -> str:
    """A time stamp naming this run's files, unique in ``folder``."""
    base = time.strftime("%Y%m%d-%H%M%S")
    stamp, n = base, 1
    while (folder / f"{stamp}.json").exists() or (folder / f"{stamp}-probe.json").exists():
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(data, indent=1, sort_keys=False, default=str) + "\n").encode())
    return path


def read_json(path: Path) -> dict | None:
    """The file's object, or None while it is missing or not complete JSON yet."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
