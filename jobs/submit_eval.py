"""The eval and classifier jobs' submission (``make eval``, ``make eval-sweep``, ``make classifier`` on a login node):
the computing happens in the job, the login node only checks what it can cheaply."""

from __future__ import annotations

from ddpm_hpc import paths
from ddpm_hpc.config import load_experiment
from ddpm_hpc.errors import UserError

from . import registry
from .executor import check_slurm_config
from .submit import _display, _entry, _require_slurm, _submit, submit_after_training
from .tasks import ClassifierJob, EvalJob, current_roots


def submit_eval(name: str, overrides: list[str], options: dict, grid: dict | None = None, out=print) -> str:
    """``make eval`` / ``make eval-sweep`` as a job; an eval-sweep's points are checked here first (against the
    newest checkpoint's stored config, when there is one)."""
    exp = load_experiment(name, overrides)
    n = options.get("n") or "1000"
    detail = f"({exp.sample.sampler}, {exp.sample_steps} steps, {n} images)"
    command = f"ddpm-hpc eval {name}"
    if grid is not None:
        from ddpm_hpc.metrics.eval_sweep import check_before_submit

        points = check_before_submit(exp, grid)
        detail = f"({points} points" if points else "(points checked when it runs"
        detail += f", {n} images each)"
        command = f"ddpm-hpc eval-sweep {name}"
    job = EvalJob(exp.to_json(), current_roots(), exp.slurm.max_requeues, options, grid)
    job_id = submit_after_training(exp, overrides, job.kind, job, f"use {command} here", detail, out)
    out(f"  results: {_display(paths.experiment_dir(name) / 'eval')}/ and the report page; {command} (make "
        f"{job.kind} ... LOCAL=1) runs it in this shell instead")
    return job_id


def submit_classifier(name: str, options: dict, out=print) -> str:
    """``ddpm-hpc classifier`` for the dataset of ``name`` as a job with ``name``'s slurm settings, recorded in its
    jobs.json (kind ``classifier``)."""
    from ddpm_hpc.metrics.classifier import weights_path

    exp = load_experiment(name)
    dataset = exp.data.dataset
    check_slurm_config(exp)
    if weights_path(dataset).exists() and not options.get("force"):
        raise UserError(f"{weights_path(dataset)} exists: classifier FDs of a retrained classifier would not compare "
                        f"with those computed with it; pass --force (ARGS=--force) to replace it")
    _require_slurm(f"use ddpm-hpc classifier {dataset} here")
    folder = registry.logs_dir(name)
    job_id = str(_submit(exp, "classifier", folder, None,
                         ClassifierJob(exp.to_json(), current_roots(), exp.slurm.max_requeues, options)).job_id)
    registry.add(name, _entry(job_id, "classifier", [], exp, None))
    out(f"submitted classifier job {job_id} for {dataset} (with {name}'s slurm settings), runs now")
    out(f"  follow: make status EXP={name}    logs: {_display(folder)}/{job_id}_0_log.out    writes "
        f"{_display(weights_path(dataset))}")
    return job_id
