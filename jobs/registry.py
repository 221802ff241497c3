"""What was submitted and what ran, per experiment, as plain files next to the experiment's outputs.

- ``experiments/<name>/jobs.json``: written by the CLI on the login node (submit, cancel). One entry per job:
  ``{"job_id", "kind": "train"|"sample"|"eval", "submitted_at", "overrides", "after", "steps", "world_size",
  "cancelled_at", "cancelled_by"}`` (``cancelled_by``: ``make cancel``, ``make submit FORCE=1`` or ``make sweep
  FORCE=1``). A sweep member's jobs are array tasks (``job_id`` ``<array>_<i>``) and also carry ``sweep`` and
  ``array``.
- ``experiments/<name>/logs/events.jsonl``: appended by the jobs on the compute node, one JSON object per line:
  ``{"time", "job_id", "kind", "event", "restart", "step", "message"}`` with event ``start``, ``finished``,
  ``requeued``, ``stopped`` or ``failed``; ``failed`` carries the one-line reason that ``make status`` prints.

The files are ``ddpm_hpc.run_dir.RunDir``'s (it names, reads and writes them); this module keeps the job records.
"""

from __future__ import annotations

import time

from ddpm_hpc.run_dir import RunDir  # the files and their raw reads and writes


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def load(name: str) -> list[dict]:
    return RunDir(name).read_jobs()


def save(name: str, jobs: list[dict]) -> None:
    RunDir(name).write_jobs(jobs)


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


# -- events, written by the jobs ---------------------------------------------------------------------------------

def record_event(name: str, **fields) -> None:
    """Append one event line, stamped with the time."""
    RunDir(name).append_event({"time": now(), **fields})


def events(name: str, job_id: str | None = None) -> list[dict]:
    return [e for e in RunDir(name).read_events() if job_id is None or str(e.get("job_id")) == str(job_id)]
