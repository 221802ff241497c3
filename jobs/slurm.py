"""Thin wrappers around the SLURM client commands (squeue, sacct, scancel, scontrol). No submitit here.

Every function raises :class:`SlurmUnavailable` with a one-line reason when the command is missing or fails, so
callers can degrade (``make status`` without accounting) or refuse (``make submit`` when squeue does not answer).
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from dataclasses import dataclass

# squeue states in which a job still holds (or will hold) its experiment's checkpoints.
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "CONFIGURING",
               "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED", "RESV_DEL_HOLD"}


class SlurmUnavailable(Exception):
    """A SLURM command is missing or did not answer."""


def missing_submit_commands() -> list[str]:
    """Which of sbatch and srun (the jobs' scripts start their step with srun) are not on PATH."""
    return [cmd for cmd in ("sbatch", "srun") if shutil.which(cmd) is None]


def _run(cmd: list[str], timeout: float = 30) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmUnavailable(f"{cmd[0]} not found: is this a SLURM login node? (on a workstation use make local)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{' '.join(cmd)} did not answer within {timeout:g} s") from None
    except OSError as exc:  # e.g. not executable
        raise SlurmUnavailable(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        err = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[-1]
        raise SlurmUnavailable(f"{' '.join(cmd[:2])} failed: {err}")
    return proc.stdout


@dataclass(frozen=True)
class QueueEntry:
    job_id: str
    state: str  # PENDING, RUNNING, ...
    reason: str  # squeue %r: None, Dependency, BeginTime, Resources, Priority, ...


def squeue_mine() -> dict[str, QueueEntry]:
    """Every job of this user that slurmctld still knows about and that is not finished, by job id."""
    # -r: one line per array task (123_4), pending ones too, as make sweep records them
    out = _run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-t", "all", "-o", "%i|%T|%r"])
    jobs = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[1] in LIVE_STATES:
            jobs[parts[0]] = QueueEntry(*parts)
    return jobs


@dataclass(frozen=True)
class AcctRow:
    job_id: str
    state: str  # COMPLETED, FAILED, CANCELLED by 0, REQUEUED, PREEMPTED, TIMEOUT, RUNNING, PENDING, ...
    exit_code: str  # "1:0"
    reason: str
    start: str
    end: str


def sacct(job_ids: list[str]) -> dict[str, list[AcctRow]]:
    """All runs of each job, oldest first (``-D`` keeps the REQUEUED/PREEMPTED runs). Needs accounting (slurmdbd);
    it lags slurmctld by a second or two. An array task that never started (``123_4``) has no row of its own: it
    gets the array's row that covers it (``123_[4-7%2]``, or ``123`` when no task of the array ever started)."""
    if not job_ids:
        return {}
    arrays = {j.split("_")[0] for j in job_ids if "_" in j}
    out = _run(["sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason,Start,End",
                "-j", ",".join(sorted(set(job_ids) | arrays))])
    rows: dict[str, list[AcctRow]] = {j: [] for j in job_ids}
    covering: list[tuple[str, set[int] | None, AcctRow]] = []  # (array id, task indices or None: all, row)
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        if parts[0] in rows:
            rows[parts[0]].append(AcctRow(*parts))
            continue
        match = _ARRAY_RECORD.match(parts[0])
        if match and match.group(1) in arrays:
            covering.append((match.group(1), _indices(match.group(2)) if match.group(2) else None, AcctRow(*parts)))
    for job_id in job_ids:
        if "_" in job_id and not rows[job_id] and job_id.split("_")[1].isdigit():
            array, index = job_id.split("_")[0], int(job_id.split("_")[1])
            rows[job_id] = [row for a, indices, row in covering if a == array and (indices is None or index in indices)]
    return rows


_ARRAY_RECORD = re.compile(r"^(\d+)(?:_\[([0-9,%-]+)\])?$")


def _indices(text: str) -> set[int]:
    """``1-3,7%2`` -> {1, 2, 3, 7} (the ``%2`` throttle is not an index)."""
    out: set[int] = set()
    for part in text.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out.update(range(int(lo), int(hi if hi.isdigit() else lo) + 1))
    return out


def scancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])


def requeue(job_id: str) -> None:
    """``scontrol requeue``: the job goes back to PENDING (same id) and restarts from its batch script. An array
    task's id is ``<array>_<task>`` (submitit's ``JobEnvironment().job_id``): only that task is requeued."""
    _run(["scontrol", "requeue", job_id], timeout=60)


def max_array_size() -> int:
    """The cluster's ``MaxArraySize`` (``scontrol show config``): an array's task indices must stay below it."""
    for line in _run(["scontrol", "show", "config"]).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize":
            try:
                return int(value.strip())
            except ValueError:
                break
    return 1001  # Slurm's default
