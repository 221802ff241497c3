"""A job's state: the one function that decides it (``decide``), for ``make status`` (jobs/status.py) and for the
report pages, which receive it as data through ``ddpm_hpc/job_states.py`` and never ask SLURM themselves; and what
each state means for the experiment (active, failed, the colour of its badge)."""

from __future__ import annotations

from ddpm_hpc import job_states

# sacct states of a job that failed (make status prints its reason)
FAILED_STATES = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"})
# States of a training job that runs or will run again: its experiment is "in progress". Not slurm.LIVE_STATES, the
# squeue filter: in sacct a PREEMPTED or STOPPED row is a run that is over. SUBMITTED: a state jobs.json recorded.
ACTIVE_STATES = frozenset({"SUBMITTED", "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "RESIZING", "SUSPENDED"})
# A job's state from its own last event (logs/events.jsonl), where SLURM cannot be asked (e.g. a laptop after pull)
EVENT_STATES = {"start": "RUNNING", "finished": "COMPLETED", "requeued": "REQUEUED", "stopped": "STOPPED",
                "failed": "FAILED"}
_RUN_BADGE = ("RUNNING", "PENDING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUBMITTED")
_BAD_BADGE = FAILED_STATES | {"CANCELLED", "PREEMPTED"}
UNKNOWN = ("unknown", "no sacct here, no events yet")  # the report's words when nothing says


def decide(entry: dict, last_event: dict | None, scheduler_state: str | None = None, scheduler: str = "sacct",
           last_seen: str | None = None) -> tuple[str, str] | None:
    """(state, where it came from) of the job ``entry`` (its jobs.json record) from the best source there is: the
    scheduler (squeue while the job is live, else sacct), a state the entry recorded, its cancellation by make
    cancel, the job's own last event, the state last seen; None when nothing says."""
    if scheduler_state:
        return scheduler_state.split()[0], scheduler  # "CANCELLED by 0" -> CANCELLED
    recorded = entry.get("state") or entry.get("status")
    if recorded:
        return recorded, "jobs.json"
    if entry.get("cancelled_at"):
        return "CANCELLED", f"cancelled {entry['cancelled_at']}"
    if last_event and last_event.get("event") in EVENT_STATES:
        return EVENT_STATES[last_event["event"]], f"job event {last_event.get('time', '')}".strip()
    if last_seen:
        return last_seen, "last seen"
    return None


def report_states(name: str, jobs: list[dict], previous: list[dict], ask_scheduler: bool) -> None:
    """The report's job states: sets ``state``, ``state_source`` (and ``message``, a failed job's reason) of each of
    ``name``'s ``jobs``. ``ask_scheduler=False`` (the index) reuses what the experiment's own page saw in sacct
    (``previous``: the jobs of its last report.json) instead of asking again."""
    from . import registry, slurm

    if ask_scheduler:
        live = slurm.sacct_states([j["job_id"] for j in jobs])
    else:
        live = {str(j.get("job_id")): j.get("state") for j in previous
                if isinstance(j, dict) and j.get("state_source") == "sacct"}
    last_event = {str(e["job_id"]): e for e in registry.events(name) if e.get("job_id") is not None}
    before = {str(j.get("job_id")): j.get("state") for j in previous if isinstance(j, dict)}
    for j in jobs:
        base = j["job_id"].split("_")[0]  # an array task's array
        event = last_event.get(j["job_id"]) or last_event.get(base)
        if event and event.get("event") == "failed" and event.get("message"):
            j["message"] = str(event["message"])
        decided = decide(j, event, live.get(j["job_id"]) or live.get(base), last_seen=before.get(j["job_id"]))
        j["state"], j["state_source"] = decided or UNKNOWN


def badge(state: str) -> str:
    """The CSS class of a job state's badge on the pages: ok, run, bad or stop."""
    s = state.upper()
    return "ok" if s.startswith("COMPLETED") else "run" if s in _RUN_BADGE else "bad" if s in _BAD_BADGE else "stop"


def register_with_report() -> None:
    """Make this module the report's source of job states (``ddpm_hpc`` never imports ``jobs``)."""
    job_states.register(job_states.JobStateSource(report_states, ACTIVE_STATES.__contains__,
                                                   FAILED_STATES.__contains__, badge))
