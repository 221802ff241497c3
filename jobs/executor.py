"""An experiment's ``slurm:`` section -> sbatch parameters -> a ``submitit.SlurmExecutor``.

The mapping is a plain dict (:func:`sbatch_parameters`) so it can be checked without SLURM installed
(:func:`sbatch_script` renders the exact script submitit would submit).
"""

from __future__ import annotations

import re
from pathlib import Path

from ddpm_hpc.config import Experiment
from ddpm_hpc.errors import ConfigError

# Slurm sends the --signal warning up to ~60 s before the requested time (its time-limit check is periodic), and a
# job needs time to start and train before that: the warning may take at most half of the time limit.
MIN_SIGNAL_DELAY_S = 10
_GRES_GPUS = re.compile(r"^gpu(?::[A-Za-z0-9_.-]+)?(?::(\d+))?$")


def check_slurm_config(exp: Experiment) -> None:
    """Refuse settings that would make requeue-on-time-limit or the job itself misbehave, in one line each."""
    s = exp.slurm
    where = f"experiment {exp.name}: slurm"
    for label, minutes in (("time_min", s.time_min), ("sample_time_min", s.sample_time_min)):
        if s.signal_delay_s > minutes * 60 / 2:
            raise ConfigError(
                f"{where}.signal_delay_s={s.signal_delay_s} is more than half of slurm.{label}={minutes} min: "
                f"Slurm sends the USR2 warning up to a minute early, so the job would be requeued before it made "
                f"progress; lower signal_delay_s or raise {label}")
    if s.signal_delay_s < MIN_SIGNAL_DELAY_S:
        raise ConfigError(
            f"{where}.signal_delay_s={s.signal_delay_s}: needs at least {MIN_SIGNAL_DELAY_S} s of warning before the "
            f"time limit to save a checkpoint and requeue (without it a time limit ends the run as TIMEOUT)")
    if s.nodes != 1:
        raise ConfigError(f"{where}.nodes={s.nodes}: make submit runs single-node, single-GPU jobs; use nodes: 1")
    if s.gres:
        m = _GRES_GPUS.match(s.gres)
        if m and m.group(1) and int(m.group(1)) > 1:
            raise ConfigError(f"{where}.gres={s.gres}: make submit runs one process on one GPU; use gpu:1")
    elif s.gpus_per_node > 1:
        raise ConfigError(f"{where}.gpus_per_node={s.gpus_per_node}: make submit runs one process on one GPU")
    reserved = {"output", "error", "open-mode", "open_mode", "signal", "dependency", "array"}
    clash = sorted(reserved & set(s.additional))
    if clash:
        raise ConfigError(f"{where}.additional: {', '.join(clash)} are set by make submit itself")


def sbatch_parameters(exp: Experiment, kind: str, dependency: str | None = None) -> dict:
    """Keyword arguments for ``SlurmExecutor.update_parameters`` for the ``train`` or ``sample`` job."""
    s = exp.slurm
    params: dict = {
        "job_name": f"ddpm-{exp.name}" + ("" if kind == "train" else "-sample"),
        "partition": s.partition,
        "time": s.time_min if kind == "train" else s.sample_time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": s.cpus_per_task,
        "signal_delay_s": s.signal_delay_s,  # -> #SBATCH --signal=USR2@N, sent to the srun step (not B:)
        "setup": list(s.setup),
        "use_srun": True,  # the signal goes to the job step, i.e. to the Python process itself
        # --requeue: pre-emption (PreemptMode=REQUEUE) and node failures put the job back in the queue, and
        # scontrol requeue is allowed even where JobRequeue=0.
        "additional_parameters": {"requeue": True, **dict(s.additional)},
    }
    if s.mem_gb > 0:  # sbatch wants a whole number with a unit
        params["mem"] = f"{int(s.mem_gb)}G" if s.mem_gb == int(s.mem_gb) else f"{round(s.mem_gb * 1024)}M"
    if s.qos:
        params["qos"] = s.qos
    if s.account:
        params["account"] = s.account
    if s.gres:
        params["gres"] = s.gres  # NCC style: --gres=gpu[:type]:1 (gpus_per_node is then ignored)
    elif s.gpus_per_node > 0:
        params["gpus_per_node"] = s.gpus_per_node
    if dependency:
        params["dependency"] = dependency
        # a failed training job must not leave its sampling job pending forever (DependencyNeverSatisfied)
        params["additional_parameters"]["kill_on_invalid_dep"] = "yes"
    return params


def make_executor(exp: Experiment, kind: str, folder: Path, dependency: str | None = None):
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    # max_num_timeout: submitit's own budget, used only when USR2 arrives outside the training loop (start-up,
    # sampling); the training loop counts requeues itself against the same slurm.max_requeues.
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=exp.slurm.max_requeues)
    executor.update_parameters(**sbatch_parameters(exp, kind, dependency))
    return executor


def sbatch_script(exp: Experiment, kind: str, folder: Path, dependency: str | None = None) -> str:
    """The sbatch script submitit would write (no SLURM needed): for tests and ``submit --dry-run``."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = sbatch_parameters(exp, kind, dependency)
    return _make_sbatch_string(command="python -u -m submitit.core._submit " + str(folder), folder=folder, **params)
