"""``make status`` (one line per experiment) and ``make logs`` (tail of a job's stdout/stderr)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ddpm_hpc import paths
from ddpm_hpc.checkpoint import newest_file, step_of
from ddpm_hpc.errors import UserError
from ddpm_hpc.logging_utils import format_seconds
# a job's state from its last event, and the states that mean it failed, as the report has them
from ddpm_hpc.report.experiment_state import EVENT_STATES, FAILED_JOB_STATES

from . import registry, slurm

FAILURES = tuple(FAILED_JOB_STATES)  # for str.startswith
NEVER_STARTED = ("", "None", "Unknown")  # sacct's Start of a run that has not begun
ONE_PROCESS_KINDS = ("sample", "eval", "eval-sweep", "classifier")  # shown after training: the newest of each


@dataclass
class JobView:
    job_id: str
    kind: str
    state: str = "UNKNOWN"
    detail: str = ""  # pending reason, or the one-line failure reason
    restarts: int = 0
    world_size: int = 1  # ranks (tasks) of the job: from its last start event, else as submitted
    live: bool = False
    started: bool = False  # has run (a start event, or a start time in sacct), perhaps only before a requeue
    run_start: int | None = None  # the step its current run began at, while that run's start is its last event
    runs: list = field(default_factory=list)

    def state_text(self) -> str:
        if not self.detail:
            return self.state
        return f"{self.state}: {self.detail}" if self.state.startswith(FAILURES) else f"{self.state} ({self.detail})"

    def describe(self) -> str:
        return f"{self.kind} {self.job_id} {self.state_text()}"


def _tail_lines(path: Path, max_bytes: int = 64_000) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def log_paths(name: str, job_id: str, rank: int = 0) -> tuple[Path, Path]:
    """submitit's logs of one task (rank) of a job: ``<job>_<rank>_log.out|err``."""
    folder = registry.logs_dir(name)
    return folder / f"{job_id}_{rank}_log.out", folder / f"{job_id}_{rank}_log.err"


def log_ranks(name: str, job_id: str) -> list[int]:
    """The ranks of a job that have written a log so far."""
    ranks = []
    for path in registry.logs_dir(name).glob(f"{job_id}_*_log.out"):
        middle = path.name[len(f"{job_id}_"):-len("_log.out")]
        if middle.isdigit():
            ranks.append(int(middle))
    return sorted(ranks)


def failure_reason(name: str, job_id: str) -> str:
    """The job's own one-line reason (events.jsonl), else the last error-looking line of its stderr."""
    failed = [e for e in registry.events(name, job_id) if e.get("event") == "failed" and e.get("message")]
    if failed:
        return str(failed[-1]["message"])
    for line in reversed(_tail_lines(log_paths(name, job_id)[1])):
        text = line.strip()
        if text and ("Error" in text or "error:" in text) and not text.startswith("raise"):
            return text[:300]
    return ""


def job_view(name: str, entry: dict, queue: dict | None, acct: dict | None) -> JobView:
    """The job's state from the best source here: squeue while it is live, else sacct, else what jobs.json and the
    job's own events say (no SLURM here, e.g. a laptop after make pull)."""
    job_id = str(entry["job_id"])
    view = JobView(job_id, entry.get("kind", "?"))
    events = registry.events(name, job_id)
    rows = (acct or {}).get(job_id, [])
    view.runs = rows
    view.started = any(e.get("event") == "start" for e in events) or any(r.start not in NEVER_STARTED for r in rows)
    if events and events[-1].get("event") == "start":
        view.run_start = int(events[-1].get("step") or 0)
    requeued = False  # pending again after a run: its next run is a restart (SLURM holds it back a while: BeginTime)
    if queue is not None and job_id in queue:
        q = queue[job_id]
        view.state, view.live = q.state, True
        reason = "" if q.state == "RUNNING" or q.reason == "None" else q.reason
        requeued = q.state == "PENDING" and view.started
        if requeued:
            reason = ", ".join(filter(None, ("requeued", "restarts shortly" if reason == "BeginTime" else reason)))
        view.detail = reason
    elif rows:
        view.state = rows[-1].state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    elif entry.get("cancelled_at"):
        view.state = "CANCELLED"
    elif events:
        view.state = EVENT_STATES.get(events[-1].get("event"), "UNKNOWN")
    if view.state == "CANCELLED" and entry.get("cancelled_at"):
        when = str(entry["cancelled_at"])[:16].replace("T", " ")
        view.detail = f"{entry.get('cancelled_by') or 'cancelled'} at {when}"
    elif view.state == "CANCELLED" and not view.started and rows and rows[-1].reason.startswith("Dependency"):
        view.detail = "not run: the job it depends on did not succeed"
    if view.state.startswith(FAILURES):
        view.detail = failure_reason(name, job_id) or view.detail
        if not view.detail and rows:
            view.detail = f"exit code {rows[-1].exit_code}"
    starts = [e for e in events if e.get("event") == "start" and e.get("world_size")]
    view.world_size = int(starts[-1]["world_size"] if starts else entry.get("world_size") or 1)
    restarts_acct = max(0, len(rows) - 1)
    restarts_events = max((int(e.get("restart") or 0) for e in events), default=0) + requeued  # sacct may lag
    view.restarts = max(restarts_acct, restarts_events)
    return view


def _metrics(name: str) -> list[dict]:
    out = []
    for line in _tail_lines(paths.experiment_dir(name) / "metrics.jsonl"):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def training_progress(name: str, total: int | None, running: bool, run_start: int | None = None) -> str:
    """Step (the newer of metrics.jsonl and the newest checkpoint), loss, checkpoint and, while the job runs, the ETA
    from the lines its current run (after ``run_start``) has logged: "eta ?" until there are two."""
    records = _metrics(name)
    ckpt = newest_file(paths.checkpoint_dir(name))
    ckpt_step = step_of(ckpt) if ckpt is not None else None
    step = max(records[-1]["step"] if records else 0, ckpt_step or 0)
    parts = [f"step {step}/{total if total else '?'}"]
    if records:
        parts.append(f"loss {records[-1].get('loss_smooth', records[-1].get('loss', float('nan'))):.4f}")
    if ckpt is not None:
        try:
            age = f" ({format_seconds(time.time() - ckpt.stat().st_mtime)} ago)"
        except OSError:
            age = ""
        parts.append(f"ckpt {ckpt_step}{age}")
    else:
        parts.append("no ckpt")
    if total and step >= total:
        parts.append("trained")
    elif running and total:
        current = [r for r in records if run_start is not None and r["step"] > run_start][-5:]
        d_step = current[-1]["step"] - current[0]["step"] if current else 0
        d_wall = current[-1].get("wall_seconds", 0) - current[0].get("wall_seconds", 0) if current else 0
        parts.append(f"eta {format_seconds((total - step) * d_wall / d_step)}" if d_step > 0 and d_wall > 0
                     else "eta ?")
    return "  ".join(parts)


def experiment_status(name: str, queue: dict | None, acct: dict | None) -> str:
    jobs = registry.load(name)
    train = registry.latest(jobs, "train")
    sample = registry.latest(jobs, "sample")
    others = [j for j in (registry.latest(jobs, kind) for kind in ONE_PROCESS_KINDS) if j]  # the newest of each kind
    pieces = []
    running, run_start = False, None
    if train:
        view = job_view(name, train, queue, acct)
        running = view.live and view.state == "RUNNING"
        run_start = view.run_start
        text = view.describe()
        if view.world_size > 1:  # data-parallel: the number of ranks (processes, one per GPU)
            text += f"  world {view.world_size}"
        if view.restarts:
            text += f"  restarts {view.restarts}"
        pieces.append(text)
    pieces.append(training_progress(name, (train or sample or {}).get("steps"), running, run_start))
    pieces += [job_view(name, j, queue, acct).describe() for j in others]
    return f"{name}  " + "  |  ".join(pieces)


def slurm_state(job_ids: list[str]) -> tuple[dict | None, dict | None, list[str]]:
    """squeue's live jobs, sacct's runs of ``job_ids`` (None for a command that did not answer) and why not."""
    notes = []
    try:
        queue = slurm.squeue_mine()
    except slurm.SlurmUnavailable as exc:
        queue = None
        notes.append(f"squeue: {exc}")
    try:
        acct = slurm.sacct(job_ids)
    except slurm.SlurmUnavailable as exc:
        acct = None
        notes.append(f"sacct: {exc}")
    return queue, acct, notes


def status(names: list[str], out=print) -> int:
    if not names:
        names = registry.experiments_with_jobs()
        if not names:
            out(f"no submitted experiments under {paths.experiments_root()} (make submit EXP=<name>)")
            return 0
    for name in names:
        if not registry.load(name):
            raise UserError(f"{name}: nothing submitted yet ({registry.registry_file(name)} not found)")
    queue, acct, notes = slurm_state([str(j["job_id"]) for n in names for j in registry.load(n)])
    width = max(len(n) for n in names)
    for name in names:
        out(experiment_status(name, queue, acct).replace(f"{name}  ", f"{name:<{width}}  ", 1))
    for note in notes:
        out(f"(note: {note}; states may be incomplete)")
    return 0


def pick_job(name: str, job_id: str | None, rank: int = 0) -> dict:
    jobs = registry.load(name)
    if not jobs:
        raise UserError(f"{name}: nothing submitted yet ({registry.registry_file(name)} not found)")
    if job_id:
        match = [j for j in jobs if str(j["job_id"]) == str(job_id)]
        if not match:
            raise UserError(f"{name} has no job {job_id}; its jobs: {', '.join(str(j['job_id']) for j in jobs)}")
        return match[-1]
    started = [j for j in jobs if log_paths(name, str(j["job_id"]), rank)[0].exists()]  # e.g. RANK=1: training
    return started[-1] if started else jobs[-1]


def show_logs(name: str, job_id: str | None = None, lines: int = 40, follow: bool = False, out=print,
              rank: int = 0) -> int:
    entry = pick_job(name, job_id, rank)
    jid = str(entry["job_id"])
    files = [p for p in log_paths(name, jid, rank) if p.exists()]
    ranks = log_ranks(name, jid)
    if not files:
        if rank and ranks:
            raise UserError(f"{entry['kind']} job {jid} of {name} has no rank {rank}; its ranks: "
                            f"{', '.join(map(str, ranks))}")
        view = job_view(name, entry, *slurm_state([jid])[:2])
        if view.live or view.state == "UNKNOWN":
            now = f"it is {view.state_text()}" if view.live else f"no {log_paths(name, jid, rank)[0]}"
            out(f"{entry['kind']} job {jid} of {name} has not started yet ({now}); see make status EXP={name}")
        else:
            how = "left no log here" if view.started else "never started"
            out(f"{entry['kind']} job {jid} of {name} {how}: it ended {view.state_text()}")
        return 0
    others = [r for r in ranks if r != rank]
    if others and not follow:
        out(f"({entry['kind']} job {jid} has {len(ranks)} ranks; this is rank {rank}, the others: "
            f"make logs EXP={name} RANK={others[0]}" + (f" ... RANK={others[-1]}" if len(others) > 1 else "") + ")")
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", *map(str, files)])
    for path in files:
        out(f"==> {path} <==")
        for line in _tail_lines(path)[-lines:]:
            out(line)
    return 0
