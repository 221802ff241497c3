"""``submit --dry-run`` and ``submit-sample --dry-run``: the checks a real submission makes up to sbatch, then the
sbatch scripts it would submit, printed. Nothing is submitted and nothing is written."""

from __future__ import annotations

from ddpm_hpc.config import load_experiment
from ddpm_hpc.run_dir import RunDir

from . import slurm
from .executor import check_slurm_config, sbatch_script, world_size
from .submit import check_checkpoint_matches, _display, live_jobs, warn_missing_data


TRAIN_ID_PLACEHOLDER = "TRAINING_JOB_ID"  # a dry run's stand-in for the id sbatch would give the training job


def _live_for_dry_run(name: str, out) -> list[dict]:
    """The live jobs a real submission would find, if SLURM is here; a dry run never fails for want of it."""
    if slurm.missing_submit_commands():
        out(f"# (no SLURM commands here: the check for live jobs of {name} is skipped)")
        return []
    try:
        return live_jobs(name)
    except slurm.SlurmUnavailable as exc:
        out(f"# (cannot check for live jobs of {name}: {exc})")
        return []


def _print_script(title: str, script: str, out) -> None:
    out(f"# ---- {title} " + "-" * max(0, 100 - len(title)))
    out(script.rstrip("\n"))


def dry_run_training(name: str, overrides: list[str], force: bool = False, out=print) -> list[str]:
    """``submit --dry-run``: the same checks as :func:`submit_training` up to sbatch, then the two sbatch scripts it
    would submit, printed. Nothing is submitted and nothing is written (no experiment folder, no submitit files)."""
    exp = load_experiment(name, overrides)
    check_slurm_config(exp)
    check_checkpoint_matches(exp)
    warn_missing_data(exp)
    out(f"# dry run of make submit EXP={name}: nothing is submitted and nothing is written")
    live, after = _live_for_dry_run(name, out), None
    if live:
        listing = ", ".join(f"{j['kind']} {j['job_id']} ({j['state']})" for j in live)
        if not force:
            out(f"# note: {name} has live jobs ({listing}); the real submission is refused unless FORCE=1 (--force)")
        else:
            after = "afterany:" + ":".join(str(j["job_id"]) for j in live)
            out(f"# FORCE=1 would cancel {listing}; the new training job would wait for them ({after})")
    folder = RunDir(name).logs
    train = sbatch_script(exp, "train", folder, after)
    sample = sbatch_script(exp, "sample", folder, f"afterok:{TRAIN_ID_PLACEHOLDER}")
    ranks = world_size(exp)
    _print_script(f"training job ({exp.train.steps} steps" + (f", {ranks} ranks" if ranks > 1 else "") +
                  f"): {_display(folder)}/<job id>_submission.sh", train, out)
    _print_script(f"sampling job (after the training job succeeds; {TRAIN_ID_PLACEHOLDER} is its job id)", sample,
                  out)
    return [train, sample]


def dry_run_sampling(name: str, overrides: list[str], out=print) -> str:
    """``submit-sample --dry-run``: the sbatch script of a sampling job, printed; nothing submitted or written."""
    exp = load_experiment(name, overrides)
    check_slurm_config(exp)
    out(f"# dry run of make sample EXP={name}: nothing is submitted and nothing is written")
    live_train = [j for j in _live_for_dry_run(name, out) if j["kind"] == "train"]
    after = f"afterok:{live_train[-1]['job_id']}" if live_train else None
    script = sbatch_script(exp, "sample", RunDir(name).logs, after)
    _print_script(f"sampling job ({exp.sample.sampler}, {exp.sample_steps} steps" +
                  (f", after training job {live_train[-1]['job_id']}" if live_train else "") + ")", script, out)
    return script
