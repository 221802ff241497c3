"""Submission (training + chained sampling, or sampling alone) and cancellation, run on the login node."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

from ddpm_hpc import paths
from ddpm_hpc.checkpoint import CorruptCheckpoint, atomic_write, newest_file, read_metadata
from ddpm_hpc.config import Experiment, load_experiment
from ddpm_hpc.errors import UserError

from . import registry, slurm
from .executor import check_slurm_config, make_executor, world_size
from .tasks import STEP_DELAY_VAR, SampleJob, TrainJob, current_roots


def live_jobs(name: str) -> list[dict]:
    """Registered jobs of ``name`` that squeue still lists as pending/running/requeued (raises SlurmUnavailable)."""
    queue = slurm.squeue_mine()
    return [dict(j, state=queue[str(j["job_id"])].state) for j in registry.load(name) if str(j["job_id"]) in queue]


def check_checkpoint_matches(exp: Experiment) -> None:
    """Refuse now, not in the queue, when the existing checkpoints belong to a different configuration."""
    if exp.train.restart:
        return
    path = newest_file(paths.checkpoint_dir(exp.name))
    if path is None:
        return
    try:
        metadata = read_metadata(path)
        if "config" in metadata:
            from ddpm_hpc.trainer import check_same_experiment  # imports torch: only when there is a checkpoint

            check_same_experiment(exp, SimpleNamespace(path=path, metadata=metadata))
    except (OSError, ValueError, CorruptCheckpoint):
        return  # unreadable file or stored config: the job's own loader reports and skips it


def warn_missing_data(exp: Experiment) -> None:
    """The loader's own test (ddpm_hpc.data), as a warning only: the compute nodes may see other paths."""
    from ddpm_hpc.data import missing_files

    root = Path(exp.data.root).expanduser() if exp.data.root else paths.data_root()
    missing = missing_files(exp.data.dataset, root)
    if missing:
        print(f"warning: no {exp.data.dataset} dataset in {missing[0].parent} here ({len(missing)} file(s) missing, "
              f"e.g. {missing[0].name}); the job will fail unless the compute nodes see it (run `make data` on the "
              f"login node first)", file=sys.stderr)


def write_snapshot(exp: Experiment, overrides: list[str]) -> Path:
    out = paths.experiment_dir(exp.name)
    out.mkdir(parents=True, exist_ok=True)
    path = out / registry.SNAPSHOT
    data = json.loads(exp.to_json())  # plain lists and dicts
    data.pop("name", None)
    header = (f"# {exp.name} as submitted at {registry.now()} (experiments/{exp.name}.yaml + cluster defaults"
              + (f" + overrides: {' '.join(overrides)}" if overrides else "") + ").\n"
              "# The jobs run exactly this; editing it or the YAML changes nothing for jobs already submitted.\n")
    atomic_write(path, (header + yaml.safe_dump(data, sort_keys=False)).encode())
    return path


def _require_slurm(instead: str) -> None:
    missing = slurm.missing_submit_commands()
    if missing:
        raise UserError(f"{' and '.join(missing)} not found: this is not a SLURM login node ({instead})")


# What submitit writes before running sbatch and renames after it succeeded: <uuid>.pkl, .submission_file_<uuid>.sh
_SUBMITIT_TEMPORARY = re.compile(r"^(\.submission_file_)?[0-9a-f]{32}\.(pkl|sh)$")


def _submit(exp: Experiment, kind: str, folder: Path, dependency: str | None, job):
    """Submit one job; if that fails, remove what the attempt left in ``folder`` and raise one line."""
    return submit_with(exp, kind, folder, dependency, lambda executor: executor.submit(job))


WHAT = {"train": "training", "sample": "sampling"}  # how messages name a job of each kind (others: the kind)


def submit_with(exp: Experiment, kind: str, folder: Path, dependency: str | None, send, what: str | None = None,
                **parameters):
    """``send(executor)`` (one job, or a job array: jobs/sweep.py) with ``exp``'s sbatch parameters updated by
    ``parameters``; if sbatch refuses, remove what the attempt left in ``folder`` and raise one line."""
    from submitit.core.utils import FailedJobError

    new_dirs = [d for d in (folder, *folder.parents) if not d.exists()]  # deepest first
    before = set(folder.iterdir()) if folder.is_dir() else set()
    what = what or WHAT.get(kind, kind)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr; the error below has it
            executor = make_executor(exp, kind, folder, dependency)
            executor.update_parameters(**parameters)
            return send(executor)
    except (RuntimeError, OSError) as exc:  # FailedJobError: sbatch said no; others: sbatch or srun unusable
        _remove_leftovers(folder, before, new_dirs)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        if isinstance(exc, FailedJobError):
            reason = next((ln for ln in lines if "error" in ln.lower()), lines[-1])
            raise UserError(f"sbatch refused the {what} job: {reason}") from None
        raise UserError(f"could not submit the {what} job: {lines[0]}") from None


def _remove_leftovers(folder: Path, before: set[Path], new_dirs: list[Path]) -> None:
    """submitit's temporary files of a submission that failed, and the folders created for it if still empty."""
    for path in (set(folder.iterdir()) if folder.is_dir() else set()) - before:
        if _SUBMITIT_TEMPORARY.match(path.name) and not path.is_symlink():
            path.unlink(missing_ok=True)
    for d in new_dirs:
        with contextlib.suppress(OSError):
            d.rmdir()  # only if empty


def _entry(job_id: str, kind: str, overrides: list[str], exp: Experiment, after: str | None) -> dict:
    return {"job_id": str(job_id), "kind": kind, "submitted_at": registry.now(), "overrides": list(overrides),
            "after": after, "steps": exp.train.steps, "cancelled_at": None, "cancelled_by": None,
            "world_size": world_size(exp) if kind == "train" else 1}


def _cancel(name: str, jobs: list[dict], by: str) -> list[str]:
    ids = [str(j["job_id"]) for j in jobs]
    try:
        slurm.scancel(ids)
    except slurm.SlurmUnavailable as exc:
        raise UserError(f"could not cancel {', '.join(ids)} of {name}: {exc}") from None
    registry.mark_cancelled(name, ids, by)
    return ids


def _step_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(STEP_DELAY_VAR, "0") or 0))
    except ValueError:
        raise UserError(f"{STEP_DELAY_VAR}={os.environ[STEP_DELAY_VAR]!r} is not a number of seconds") from None


def submit_training(name: str, overrides: list[str], force: bool = False, out=print) -> tuple[str, str]:
    exp = load_experiment(name, overrides)
    check_slurm_config(exp)
    check_checkpoint_matches(exp)
    warn_missing_data(exp)
    _require_slurm(f"use make local EXP={name} here")
    try:
        live = live_jobs(name)
    except slurm.SlurmUnavailable as exc:
        raise UserError(f"cannot check for live jobs of {name}: {exc}") from None
    after = None
    if live:
        listing = ", ".join(f"{j['kind']} {j['job_id']} ({j['state']})" for j in live)
        if not force:
            raise UserError(f"{name} already has live jobs: {listing}; two jobs must not write the same checkpoints. "
                            f"Wait (make status EXP={name}), make cancel EXP={name}, or add FORCE=1 (--force) to "
                            f"cancel them and submit")
        ids = _cancel(name, live, "make submit FORCE=1")
        after = "afterany:" + ":".join(ids)  # the new job cannot start before the cancelled ones have exited
        out(f"cancelled {listing}; the new training job starts after they have exited")
    folder = registry.logs_dir(name)
    roots, config = current_roots(), exp.to_json()
    train_job = _submit(exp, "train", folder, after, TrainJob(config, roots, exp.slurm.max_requeues, _step_delay()))
    train_id = str(train_job.job_id)
    registry.add(name, _entry(train_id, "train", overrides, exp, after))
    snapshot = write_snapshot(exp, overrides)  # only now: a refused job must not replace the last one's snapshot
    try:
        sample_job = _submit(exp, "sample", folder, f"afterok:{train_id}",
                             SampleJob(config, roots, exp.slurm.max_requeues))
    except UserError as exc:
        raise UserError(f"training job {train_id} of {name} is submitted, but {exc}; make sample EXP={name} "
                        f"submits one that runs after it") from None
    sample_id = str(sample_job.job_id)
    registry.add(name, _entry(sample_id, "sample", overrides, exp, f"afterok:{train_id}"))
    rel = _display(folder)
    ranks = world_size(exp)
    out(f"submitted {name}: training job {train_id} ({exp.train.steps} steps, partition {exp.slurm.partition}"
        + (f", {ranks} ranks" if ranks > 1 else "") + "), "
        f"sampling job {sample_id} (runs after {train_id} succeeds)")
    out(f"  config snapshot: {_display(snapshot)}")
    out(f"  follow:  make status EXP={name}    make logs EXP={name}    squeue -j {train_id},{sample_id}")
    out(f"  logs:    {rel}/{train_id}_0_log.out (and .err" + (f"; ranks 1-{ranks - 1}: {train_id}_<rank>_log.*"
        if ranks > 1 else "") + f")    stop: make cancel EXP={name}")
    out(f"  results: make pull EXP={name} (on your laptop), or see {_display(paths.experiment_dir(name))}/samples")
    return train_id, sample_id


def submit_sampling(name: str, overrides: list[str], out=print) -> str:
    exp = load_experiment(name, overrides)
    job = SampleJob(exp.to_json(), current_roots(), exp.slurm.max_requeues)
    return submit_after_training(exp, overrides, "sample", job, f"use ddpm-hpc sample {name} here",
                                 f"({exp.sample.sampler}, {exp.sample_steps} steps)", out)


def submit_after_training(exp: Experiment, overrides: list[str], kind: str, job, instead: str, detail: str,
                          out=print) -> str:
    """A one-process job that reads the experiment's checkpoint (sampling, eval): after the live training job
    succeeds if there is one, else now (refused without a checkpoint)."""
    name = exp.name
    check_slurm_config(exp)
    _require_slurm(instead)
    try:
        live_train = [j for j in live_jobs(name) if j["kind"] == "train"]
    except slurm.SlurmUnavailable as exc:
        raise UserError(f"cannot check for live jobs of {name}: {exc}") from None
    after = f"afterok:{live_train[-1]['job_id']}" if live_train else None
    if after is None and exp.sample.checkpoint in ("latest", "") and not newest_file(paths.checkpoint_dir(name)):
        raise UserError(f"no checkpoint of {name} in {paths.checkpoint_dir(name)}: make submit EXP={name} first")
    folder = registry.logs_dir(name)
    job_id = str(_submit(exp, kind, folder, after, job).job_id)
    registry.add(name, _entry(job_id, kind, overrides, exp, after))
    when = f"after training job {live_train[-1]['job_id']} succeeds" if after else "now"
    out(f"submitted {WHAT.get(kind, kind)} job {job_id} for {name} {detail}, runs {when}")
    out(f"  follow: make status EXP={name}    logs: {_display(folder)}/{job_id}_0_log.out")
    return job_id


def cancel(name: str, out=print) -> list[str]:
    try:
        live = live_jobs(name)
    except slurm.SlurmUnavailable as exc:
        raise UserError(f"cannot list the jobs of {name}: {exc}") from None
    if not live:
        out(f"{name}: no live jobs")
        return []
    ids = _cancel(name, live, "make cancel")
    listing = ", ".join(f"{j['kind']} {j['job_id']}" for j in live)
    training = any(j["kind"] == "train" for j in live)
    out(f"cancelled {listing} of {name}" + (f" (a running training job saves a checkpoint first; make submit "
                                             f"EXP={name} continues from it)" if training else ""))
    return ids


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
