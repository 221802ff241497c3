"""``make status SWEEP=<name>``: one line per member (the line of ``make status EXP=<member>``, plus the eval job when
the sweep asked for one) and a summary line counting the members by state. One squeue and one sacct call for the
whole sweep."""

from __future__ import annotations

from collections import Counter

from ddpm_hpc import paths
from ddpm_hpc.sweep_members import load_record, member_names

from . import registry
from .status import FAILURES, experiment_status, job_view, slurm_state, training_progress

ORDER = ("training", "sampling", "evaluating", "pending", "requeued", "trained", "sampled", "done", "failed",
         "eval failed", "cancelled", "not submitted")


def member_state(name: str, queue, acct) -> str:
    """One word for the summary: where the member is, from its newest training and sampling jobs."""
    jobs = registry.load(name)
    trains = [i for i, j in enumerate(jobs) if j.get("kind") == "train"]
    if not trains:
        return "not submitted"
    t = job_view(name, jobs[trains[-1]], queue, acct)
    samples = [j for j in jobs[trains[-1] + 1:] if j.get("kind") == "sample"]  # those that follow this training
    s = job_view(name, samples[-1], queue, acct) if samples else None
    evals = [j for j in jobs[trains[-1] + 1:] if j.get("kind") == "eval"]
    e = job_view(name, evals[-1], queue, acct) if evals else None
    if t.live:
        if t.state == "RUNNING":
            return "training"
        return "requeued" if t.started else "pending"
    if t.state.startswith(FAILURES):
        return "failed"
    if t.state == "CANCELLED":
        return "cancelled"
    if s is not None:
        if s.live:
            return "sampling" if s.state == "RUNNING" else "trained"
        if s.state == "COMPLETED" and e is not None and e.live:
            return "evaluating" if e.state == "RUNNING" else "sampled"
        if s.state == "COMPLETED" and (e is None or e.state == "COMPLETED"):
            return "done"
        if e is not None and e.state.startswith(FAILURES):
            return "eval failed"
        if s.state.startswith(FAILURES):
            return "failed"
    return "trained" if t.state == "COMPLETED" else t.state.lower()


def sweep_status(sweep_name: str, out=print) -> int:
    record = load_record(sweep_name)
    names = member_names(sweep_name)
    ids = [str(j["job_id"]) for n in names for j in registry.load(n)]
    queue, acct, notes = slurm_state(ids) if ids else (None, None, [])
    width = max(len(n) for n in names)
    counts: Counter = Counter()
    arrays: dict[str, str] = {}
    for name in names:
        jobs = registry.load(name)
        if jobs:
            line = experiment_status(name, queue, acct)
            evaluation = registry.latest(jobs, "eval")  # the sweep's eval array (make status EXP= shows no evals)
            if evaluation:
                line += "  |  " + job_view(name, evaluation, queue, acct).describe()
            for job in jobs:
                if job.get("array") and job.get("sweep") == sweep_name:
                    arrays[job["kind"]] = str(job["array"])
        else:
            line = f"{name}  not submitted  |  {training_progress(name, None, False)}"
        out(line.replace(f"{name}  ", f"{name:<{width}}  ", 1))
        counts[member_state(name, queue, acct)] += 1
    parts = [f"{counts[s]} {s}" for s in ORDER if counts[s]] + \
        [f"{c} {s}" for s, c in counts.items() if s not in ORDER]
    cap = record.get("array_parallelism")
    listing = ", ".join(f"{kind} {array}" for kind, array in arrays.items())
    out(f"sweep {sweep_name}: {len(names)} members: {', '.join(parts)}"
        + (f"  |  arrays: {listing}" if listing else "") + (f" (at most {cap} tasks at once)" if cap else "")
        + f"  |  {paths.experiment_dir(sweep_name) / 'index.html'}")
    for note in notes:
        out(f"(note: {note}; states may be incomplete)")
    return 0
