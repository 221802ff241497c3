"""An experiment's ``slurm:`` section -> sbatch parameters -> a ``submitit.SlurmExecutor``.

The mapping is a plain dict (:func:`sbatch_parameters`) so it can be checked without SLURM installed
(:func:`sbatch_script` renders the exact script submitit would submit).

Several GPUs (``slurm.gpus_per_node: N``, or a count in ``gres``) and/or several nodes (``slurm.nodes: M``) make the
training job start one task (one process, one rank) per GPU: ``--ntasks-per-node=N`` over M nodes, world size N*M.
CPU-only data-parallel jobs (the tests) set ``slurm.tasks_per_node`` with ``gpus_per_node: 0``. The sampling job
always runs one task on one GPU.
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


def _gres_count(gres: str) -> int | None:
    """The GPU count of an NCC-style gres (``gpu``, ``gpu:2``, ``gpu:ampere:2``); None if it is not one."""
    if not _GRES_GPUS.match(gres):
        return None
    parts = gres.split(":")
    return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1


def gpus_per_node(exp: Experiment) -> int:
    """GPUs per node of the training job: the count in ``gres`` if it names more than one, else ``gpus_per_node``
    (which then also sets the count in ``gres``: ``gpus_per_node: 4`` with the NCC default ``gres: gpu:1`` asks for
    ``--gres=gpu:4``)."""
    s = exp.slurm
    if not s.gres:
        return s.gpus_per_node
    count = _gres_count(s.gres)
    if count is None:
        return max(1, s.gpus_per_node)  # a gres we cannot read (e.g. two resources): trust gpus_per_node
    return count if count > 1 else max(count, s.gpus_per_node)


def tasks_per_node(exp: Experiment) -> int:
    """Ranks per node: one per GPU, or ``slurm.tasks_per_node`` for CPU-only jobs."""
    return exp.slurm.tasks_per_node or max(1, gpus_per_node(exp))


def world_size(exp: Experiment) -> int:
    return exp.slurm.nodes * tasks_per_node(exp)


def _gres_with_count(gres: str, count: int) -> str:
    """``gpu[:type][:n]`` with the count set to ``count``."""
    parts = gres.split(":")
    if len(parts) > 1 and parts[-1].isdigit():
        parts = parts[:-1]
    return ":".join(parts + [str(count)])


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
    count = _gres_count(s.gres) if s.gres else None
    if count is not None and count > 1 and s.gpus_per_node > 1 and count != s.gpus_per_node:
        raise ConfigError(f"{where}.gres={s.gres} asks for {count} GPUs per node but slurm.gpus_per_node="
                          f"{s.gpus_per_node}; set one of them (the other follows)")
    gpus = gpus_per_node(exp)
    if s.tasks_per_node and gpus > 0 and s.tasks_per_node != gpus:
        raise ConfigError(f"{where}.tasks_per_node={s.tasks_per_node} but {gpus} GPU(s) per node: training runs one "
                          f"task per GPU; leave tasks_per_node at 0 (it is for CPU-only jobs)")
    world = world_size(exp)
    if exp.data.batch_size % world:
        raise ConfigError(f"experiment {exp.name}: data.batch_size={exp.data.batch_size} is the global batch and must "
                          f"divide evenly over {world} ranks ({s.nodes} node(s) x {tasks_per_node(exp)} task(s))")
    reserved = {"output", "error", "open-mode", "open_mode", "signal", "dependency", "array"}
    clash = sorted(reserved & set(s.additional))
    if clash:
        raise ConfigError(f"{where}.additional: {', '.join(clash)} are set by make submit itself")


def sbatch_parameters(exp: Experiment, kind: str, dependency: str | None = None) -> dict:
    """Keyword arguments for ``SlurmExecutor.update_parameters`` for the ``train`` job or a one-process job
    (``sample``, ``eval``, ``eval-sweep``: one task, at most one GPU, ``slurm.sample_time_min``)."""
    s = exp.slurm
    train = kind == "train"
    gpus = gpus_per_node(exp) if train else min(1, gpus_per_node(exp))  # sampling: one process, one GPU
    tasks = tasks_per_node(exp) if train else 1
    params: dict = {
        "job_name": f"ddpm-{exp.name}" + ("" if kind == "train" else f"-{kind}"),  # -sample, -eval, -eval-sweep
        "partition": s.partition,
        "time": s.time_min if kind == "train" else s.sample_time_min,
        "nodes": s.nodes if train else 1,
        "ntasks_per_node": tasks,
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
    if s.gres:  # NCC style: --gres=gpu[:type]:N, N = GPUs per node (gpus_per_node only sets N)
        count = _gres_count(s.gres)
        params["gres"] = _gres_with_count(s.gres, gpus) if count is not None and count != gpus else s.gres
    elif gpus > 0:
        params["gpus_per_node"] = gpus
    if tasks * params["nodes"] > 1:
        # A rank that dies (exception, OOM) ends the others at once instead of leaving them blocked in a collective
        # until its timeout; ranks that stop normally exit 0 (jobs/tasks.py), so a requeue is never cut short.
        params["srun_args"] = ["--kill-on-bad-exit=1"]
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
