"""The job callables that submitit pickles and runs on the compute node.

Both carry only the resolved config (as JSON), the storage roots and a few knobs: never model state. A run always
resumes from the checkpoint files on disk, so a requeue by anyone (this code, submitit, ``scontrol requeue``,
pre-emption, a node failure) that re-runs the original pickle continues where the files say.

Pre-emption and time limits (both arrive as SIGUSR2, sent to the srun step):

1. During training the trainer's own flag-only handler owns USR2/TERM/INT (it replaces submitit's handler for the
   duration of ``train()``). It finishes the current step, saves a checkpoint and returns ``interrupted``.
2. After USR2, :class:`TrainJob` requeues itself: ``scontrol requeue $SLURM_JOB_ID`` (what submitit does), after
   checking ``SLURM_RESTART_COUNT`` against ``slurm.max_requeues``. Every restart counts once, whatever its cause;
   submitit's "shorter than 10 minutes means timed out" guess is never consulted, so pre-emptions of short jobs do
   not burn a separate budget.
3. After SIGTERM (``scontrol requeue``, ``scancel``, pre-emption without the user signal, the hard time limit) it
   only saves and exits with status 1: SLURM decides whether the job comes back (requeue/pre-emption) or not (cancel).
4. USR2 outside ``train()`` (while importing or loading data, or while writing the final figures) reaches
   submitit's handler, which calls :meth:`checkpoint` (a fresh job, no state) and requeues; nothing is lost
   because nothing was trained in that window.

Several tasks (``slurm.gpus_per_node`` > 1, ``slurm.nodes`` > 1, or ``slurm.tasks_per_node``): every task runs
:class:`TrainJob`, one rank each. ``TorchDistributedEnvironment().export()`` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT from the SLURM variables, then ``distributed.init_from_env`` joins the process group (NCCL
on GPUs, gloo on CPUs). Slurm signals every task; the ranks agree on the step to stop at (the trainer), rank 0 saves,
and only rank 0 writes events and requeues (submitit's rule: its own handler also acts on rank 0 only). The other
ranks return normally (exit 0) after that save, so that ``srun --kill-on-bad-exit`` never cuts rank 0's requeue
short. After the requeue every rank starts again from the top and loads the same newest checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import submitit
from submitit.core.utils import temporary_save_path

from ddpm_hpc.config import experiment_from_json

from . import registry
from .slurm import SlurmUnavailable, requeue

ROOT_VARS = ("DDPM_HPC_EXPERIMENTS", "DDPM_HPC_CHECKPOINTS", "DDPM_HPC_DATA")
# Test knob: seconds to sleep after every training step (tiny runs otherwise finish before a test can interrupt them).
STEP_DELAY_VAR = "DDPM_HPC_STEP_DELAY"


class RequeueLimit(RuntimeError):
    """``slurm.max_requeues`` reached: the job is not requeued again (submit it again to continue)."""


def current_roots() -> dict[str, str]:
    from ddpm_hpc import paths

    return {"DDPM_HPC_EXPERIMENTS": str(paths.experiments_root()),
            "DDPM_HPC_CHECKPOINTS": str(paths.checkpoints_root()),
            "DDPM_HPC_DATA": str(paths.data_root())}


def _job_id() -> str:
    try:
        return submitit.JobEnvironment().job_id
    except Exception:  # not inside a submitit job (tests calling the job in-process)
        return os.environ.get("SLURM_JOB_ID", "local")


def _restarts() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def _rank() -> tuple[int, int]:
    """(global rank, number of tasks) of this process in its SLURM job; (0, 1) outside one."""
    try:
        env = submitit.JobEnvironment()
        return int(getattr(env, "global_rank", 0)), int(getattr(env, "num_tasks", 1))
    except Exception:
        return 0, 1


def _init_distributed(exp):
    """A :class:`DistContext`: rank 0 of 1 for one task, else the joined process group of this job's tasks."""
    from ddpm_hpc.distributed import DistContext, init_from_env
    from ddpm_hpc.trainer import resolve_device

    if _rank()[1] <= 1:
        return DistContext()
    # overwrite: a requeued run gets the same values again; CUDA_VISIBLE_DEVICES is left as Slurm set it (the
    # trainer picks cuda:<local rank> among the visible GPUs, or cuda:0 when Slurm bound one GPU to each task).
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if submitit.JobEnvironment().num_nodes == 1:  # all ranks here: loopback, whether or not the node name resolves
        os.environ["MASTER_ADDR"] = "127.0.0.1"
    return init_from_env(resolve_device(exp.train.device, DistContext()).type)


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _latest_step(name: str) -> int:
    from ddpm_hpc import paths
    from ddpm_hpc.checkpoint import newest_file, step_of

    ckpt = newest_file(paths.checkpoint_dir(name))
    return step_of(ckpt) if ckpt is not None else 0


class _Job(submitit.helpers.Checkpointable):
    kind = "job"

    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int):
        self.config_json = config_json
        self.roots = dict(roots)
        self.max_requeues = max_requeues

    def _fresh(self) -> "_Job":
        raise NotImplementedError

    def _setup(self):
        os.environ.update(self.roots)  # the roots of the submitting shell, whatever the job's environment says
        exp = experiment_from_json(self.config_json)
        return exp, _job_id()

    def _event(self, exp_name: str, event: str, **fields) -> None:
        rank = _rank()[0]
        if rank == 0:  # one line per event of the job, whatever its number of ranks
            registry.record_event(exp_name, job_id=_job_id(), kind=self.kind, event=event, restart=_restarts(),
                                  **fields)
        elif event == "failed":  # a rank that fails alone says so, with its rank
            registry.record_event(exp_name, job_id=_job_id(), kind=self.kind, event=event, restart=_restarts(),
                                  rank=rank, **fields)

    def checkpoint(self, *args, **kwargs):
        """submitit's handler calls this on USR2 outside the training loop: requeue a fresh job (no state)."""
        exp = experiment_from_json(self.config_json)
        if _restarts() >= self.max_requeues:
            self._event(exp.name, "failed", message=f"not requeued: restarted {_restarts()} times already "
                                                    f"(slurm.max_requeues={self.max_requeues})")
            return None  # submitit then ends the job with UncompletedJobError
        self._event(exp.name, "requeued", step=_latest_step(exp.name), message="USR2 outside training (submitit)")
        return submitit.helpers.DelayedSubmission(self._fresh())

    def _run_once(self, work) -> str:
        """A one-process job: start event, ``work(exp)``, finished event with its output path (or the failure)."""
        exp, _ = self._setup()
        self._event(exp.name, "start", host=os.uname().nodename)
        try:
            out = work(exp)
        except Exception as exc:
            self._fail(exp.name, exc)
            raise
        self._event(exp.name, "finished", message=str(out))
        return str(out)

    def _fail(self, exp_name: str, exc: BaseException) -> None:
        message = _one_line(exc)
        self._event(exp_name, "failed", message=message)
        print(f"error: {message}", file=sys.stderr, flush=True)


class TrainJob(_Job):
    kind = "train"

    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int, step_delay_s: float = 0.0):
        super().__init__(config_json, roots, max_requeues)
        self.step_delay_s = step_delay_s

    def _fresh(self) -> "TrainJob":
        return TrainJob(self.config_json, self.roots, self.max_requeues, self.step_delay_s)

    def __call__(self) -> dict:
        from ddpm_hpc import distributed
        from ddpm_hpc.pipeline import run_training

        exp, _ = self._setup()
        delay = self.step_delay_s
        try:
            ctx = _init_distributed(exp)
            if ctx.enabled:
                print(f"rank {ctx.rank} of {ctx.world_size} (local rank {ctx.local_rank}) on {os.uname().nodename}"
                      + ("" if ctx.is_main else ": training; rank 0 logs the progress"), flush=True)
            self._event(exp.name, "start", step=_latest_step(exp.name), total=exp.train.steps,
                        host=os.uname().nodename, world_size=ctx.world_size)
            outcome = run_training(exp, ctx, after_step=(lambda run: time.sleep(delay)) if delay > 0 else None)
        except Exception as exc:  # UserError (missing data, checkpoint mismatch) or a bug: one line for make status
            self._fail(exp.name, exc)
            raise
        finally:
            distributed.shutdown()
        if not ctx.is_main:  # rank 0 saved (the trainer waited for it), records the outcome and requeues
            print(f"rank {ctx.rank}: {outcome.status} at step {outcome.step}", flush=True)
            return {"rank": ctx.rank, "status": outcome.status, "step": outcome.step, "signal": outcome.signal}
        if outcome.status == "finished":
            self._event(exp.name, "finished", step=outcome.step)
            return {"step": outcome.step, "checkpoint": str(outcome.checkpoint)}
        if outcome.signal == signal.Signals.SIGUSR2.name:
            self._requeue(exp, outcome)  # does not return
        self._event(exp.name, "stopped", step=outcome.step,
                    message=f"{outcome.signal} at step {outcome.step}, checkpoint saved")
        # Exit non-zero without a result pickle (and without a traceback): if SLURM is requeueing or pre-empting
        # the job it comes back and resumes from this checkpoint; if it was cancelled it stays cancelled; and if
        # something else sent the signal the job ends FAILED, so the chained sampling job does not run.
        print(f"stopped by {outcome.signal} at step {outcome.step} after saving {outcome.checkpoint}; SLURM requeues "
              f"the job if this was a requeue or a pre-emption", flush=True)
        sys.exit(1)

    def _requeue(self, exp, outcome) -> None:
        restarts = _restarts()
        if restarts >= self.max_requeues:
            exc = RequeueLimit(f"not requeued: restarted {restarts} times already (slurm.max_requeues="
                               f"{self.max_requeues}); saved step {outcome.step}, make submit continues from it")
            self._fail(exp.name, exc)
            raise exc
        env = submitit.JobEnvironment()
        # What submitit's own handler would do: dump the checkpoint() submission (a fresh job: no model state) over
        # the submitted pickle, then requeue. The countdown keeps submitit's budget in line with ours.
        delayed = self.checkpoint_submission()
        delayed.set_timeout(exp.slurm.time_min, self.max_requeues - restarts - 1)
        with temporary_save_path(env.paths.submitted_pickle) as tmp:
            delayed.dump(tmp)
        try:
            requeue(env.job_id)
        except SlurmUnavailable as exc:  # e.g. no scontrol on the compute nodes
            failure = RuntimeError(f"could not requeue ({exc}); saved step {outcome.step}, make submit continues "
                                   f"from it")
            self._fail(exp.name, failure)
            raise failure from None
        self._event(exp.name, "requeued", step=outcome.step,
                    message=f"SIGUSR2 (pre-emption or time limit) at step {outcome.step}, checkpoint saved")
        print(f"requeued job {env.job_id} after saving step {outcome.step} "
              f"(restart {restarts + 1} of at most {self.max_requeues})", flush=True)
        sys.exit(-1)  # like submitit: no result pickle, the requeued run writes it

    def checkpoint_submission(self):
        return submitit.helpers.DelayedSubmission(self._fresh())


class SampleJob(_Job):
    kind = "sample"

    def _fresh(self) -> "SampleJob":
        return SampleJob(self.config_json, self.roots, self.max_requeues)

    def __call__(self) -> str:
        from ddpm_hpc.pipeline import run_sampling

        return self._run_once(lambda exp: run_sampling(exp))


class EvalJob(_Job):
    """``make eval`` (``run_eval``) or, with a grid, ``make eval-sweep`` (``run_eval_sweep``) on a compute node, with
    the options given at submission. A requeue runs it again from the top: an eval writes its file only at the end,
    an eval-sweep reuses the points its table already holds."""
    kind = "eval"

    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int, options: dict,
                 grid: dict | None = None):
        super().__init__(config_json, roots, max_requeues)
        self.options, self.grid = dict(options), grid
        if grid is not None:
            self.kind = "eval-sweep"

    def _fresh(self) -> "EvalJob":
        return EvalJob(self.config_json, self.roots, self.max_requeues, self.options, self.grid)

    def __call__(self) -> str:
        if self.grid is not None:
            from ddpm_hpc.metrics.eval_sweep import run_eval_sweep

            return self._run_once(lambda exp: run_eval_sweep(exp, self.grid, **self.options))
        from ddpm_hpc.metrics.eval import run_eval

        return self._run_once(lambda exp: run_eval(exp, **self.options))


class ClassifierJob(_Job):
    """``ddpm-hpc classifier`` for the experiment's dataset on a compute node (``train.device``: a GPU when given)."""
    kind = "classifier"

    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int, options: dict):
        super().__init__(config_json, roots, max_requeues)
        self.options = dict(options)

    def _fresh(self) -> "ClassifierJob":
        return ClassifierJob(self.config_json, self.roots, self.max_requeues, self.options)

    def __call__(self) -> str:
        from ddpm_hpc.distributed import DistContext
        from ddpm_hpc.metrics.classifier import train_classifier
        from ddpm_hpc.trainer import resolve_device

        def work(exp):
            device = resolve_device(exp.train.device, DistContext())
            return train_classifier(exp.data.dataset, device=device, **self.options).path

        return self._run_once(work)
