"""What was submitted and what ran, per experiment, as plain files next to the experiment's outputs.

- ``experiments/<name>/jobs.json``: written by the CLI on the login node (submit, cancel). One entry per job:
  ``{"job_id", "kind": "train"|"sample"|"eval", "submitted_at", "overrides", "after", "steps", "world_size",
  "cancelled_at", "cancelled_by"}`` (``cancelled_by``: ``make cancel``, ``make submit FORCE=1`` or ``make sweep
  FORCE=1``). A sweep member's jobs are array tasks (``job_id`` ``<array>_<i>``) and also carry ``sweep`` and
  ``array``.
- ``experiments/<name>/logs/events.jsonl``: appended by the jobs on the compute node, one JSON object per line:
  ``{"time", "job_id", "kind", "event", "restart", "step", "message"}`` with event ``start``, ``finished``,
  ``requeued``, ``stopped`` or ``failed``; ``failed`` carries the one-line reason that ``make status`` prints.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ddpm_hpc import paths
from ddpm_hpc.checkpoint import atomic_write

REGISTRY = "jobs.json"
EVENTS = "events.jsonl"
SNAPSHOT = "submitted_config.yaml"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def logs_dir(name: str) -> Path:
    """submitit's folder for this experiment: ``<jobid>_0_log.out|err``, ``<jobid>_submitted.pkl``, ..."""
    return paths.experiment_dir(name) / "logs"


def registry_file(name: str) -> Path:
    return paths.experiment_dir(name) / REGISTRY


def load(name: str) -> list[dict]:
    try:
        data = json.loads(registry_file(name).read_text())
    except (OSError, ValueError):
        return []
    jobs = data.get("jobs") if isinstance(data, dict) else None
    return [j for j in jobs or [] if isinstance(j, dict) and "job_id" in j]


def save(name: str, jobs: list[dict]) -> None:
    path = registry_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps({"experiment": name, "jobs": jobs}, indent=1) + "\n").encode())


def add(name: str, entry: dict) -> None:
    save(name, load(name) + [entry])


def mark_cancelled(name: str, job_ids: list[str], by: str) -> None:
    """Record who cancelled these jobs of ``name`` and when (make status shows it)."""
    entries = load(name)
    for entry in entries:
        if str(entry["job_id"]) in job_ids:
            entry["cancelled_at"], entry["cancelled_by"] = now(), by
    save(name, entries)


def latest(jobs: list[dict], kind: str) -> dict | None:
    found = [j for j in jobs if j.get("kind") == kind]
    return found[-1] if found else None


def experiments_with_jobs() -> list[str]:
    root = paths.experiments_root()
    return sorted(p.parent.name for p in root.glob(f"*/{REGISTRY}"))


# -- events, written by the jobs ---------------------------------------------------------------------------------

def record_event(name: str, **fields) -> None:
    """Append one event line (a single ``write`` on an O_APPEND file: lines from requeued runs never interleave)."""
    folder = logs_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": now(), **fields}) + "\n"
    fd = os.open(folder / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def events(name: str, job_id: str | None = None) -> list[dict]:
    try:
        lines = (logs_dir(name) / EVENTS).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and (job_id is None or str(event.get("job_id")) == str(job_id)):
            out.append(event)
    return out
