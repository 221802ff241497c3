"""Job states as data. The report shows the state of each job an experiment recorded (``jobs.json``) but never asks
the scheduler, nor knows its vocabulary: the cluster side (``jobs/job_state.py``) registers the one source that
decides a job's state and what that state means, when the ``jobs`` package is imported (``ddpm-hpc`` and every job
import it). Without it (the core alone) a job shows the state the last report saw, else "unknown"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# (experiment, its jobs.json entries, the jobs of its last report.json, ask the scheduler?) -> sets each entry's
# "state" and "state_source" (and "message", the reason a failed job gave)
Decide = Callable[[str, list[dict], list[dict], bool], None]


def _last_seen(name: str, jobs: list[dict], previous: list[dict], ask: bool) -> None:
    before = {str(j.get("job_id")): j.get("state") for j in previous if isinstance(j, dict)}
    for j in jobs:
        if before.get(j["job_id"]):
            j["state"], j["state_source"] = before[j["job_id"]], "last seen"
        else:
            j["state"], j["state_source"] = "unknown", "no job states here"


@dataclass(frozen=True)
class JobStateSource:
    decide: Decide
    is_active: Callable[[str], bool] = lambda state: False  # the job runs, or will: its experiment is in progress
    is_failed: Callable[[str], bool] = lambda state: False
    badge: Callable[[str], str] = lambda state: "stop"  # the CSS class of its badge: ok, run, bad or stop


_source = JobStateSource(_last_seen)


def register(source: JobStateSource) -> None:
    global _source
    _source = source


def current() -> JobStateSource:
    return _source
