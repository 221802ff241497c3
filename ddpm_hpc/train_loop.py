"""What the training loop does around each optimisation step: sums the losses, writes a metrics line every
``train.log_every`` steps, has the ranks agree on stopping (``cadence.py`` says when), and saves."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import cadence
from .divergence import diverged, non_finite_state
from .logging_utils import Progress
from .run_dir import RunDir
from .stop_signals import StopFlag

if TYPE_CHECKING:
    from .trainer import Run


class TrainLoop:
    """The loop's bookkeeping around the steps: losses, clocks, metrics lines, stop agreement and saves."""

    def __init__(self, run: Run, say):
        exp, self.run, self.say = run.exp, run, say
        self.run_dir = RunDir(exp.name)
        self.t_start, self.last_save = time.monotonic(), time.monotonic()
        # The throughput window: steps of this process only (a resumed loss window began before the restart).
        self.window_start, self.window_first_step = time.monotonic(), run.step
        self.progress = Progress(exp.train.steps, exp.name, start=run.step) if run.ctx.is_main else None
        self.saved: Path | None = None
        self.every = cadence.checkpoint_every_steps(exp.train.checkpoint_every, exp.train.checkpoint_minutes,
                                                    run.device.type)
        self.agreement = cadence.Agreement(run.step, exp.train.steps, run.ctx.world_size)

    def add_loss(self, loss: torch.Tensor) -> None:
        run = self.run
        run.loss_sum += loss.float()  # in place, so run.tensors() saves the partial window
        if run.step == 1:  # the practical starts its smoothed loss at the first value; on the device (no host sync)
            run.loss_smooth = loss.float().clone()
        run.loss_smooth += 0.01 * (loss.float() - run.loss_smooth)

    def log_line(self, step: int) -> None:
        run, exp, ctx = self.run, self.run.exp, self.run.ctx
        ctx.mean_([run.loss_sum, run.loss_smooth])  # each rank's share -> the global batch's loss (see save)
        now = time.monotonic()
        mean = (run.loss_sum / (step - run.log_window_start)).item()  # the only host sync: once per log line
        smooth = run.loss_smooth.item()
        if not (math.isfinite(mean) and math.isfinite(smooth)):
            raise diverged(run, f"the loss is {mean} (mean of steps {run.log_window_start + 1}-{step})")
        rate = (step - self.window_first_step) * exp.data.batch_size / max(now - self.window_start, 1e-9)
        record = {"step": step, "loss": mean, "loss_smooth": smooth, "img_per_s": rate,
                  "wall_seconds": run.wall_seconds + now - self.t_start}
        if ctx.is_main:
            self.run_dir.append_metrics(record)
            self.say(f"step {step:7d}/{exp.train.steps}  loss {smooth:.4f}  {rate:.0f} img/s")
        run.loss_sum.zero_()
        self.window_start, self.window_first_step, run.log_window_start = now, step, step

    def agree_on_stop(self, step: int, stop: StopFlag) -> tuple[bool, bool]:
        """(stop now, a timed save is due), the same on every rank."""
        run, agreement = self.run, self.agreement
        if not agreement.due(step):  # every step alone; every second or so with several ranks (ddpm_hpc/cadence.py)
            return False, False
        minutes = run.exp.train.checkpoint_minutes
        timed = minutes > 0 and time.monotonic() - self.last_save > 60 * minutes
        # Ranks agree on both flags (one all-reduce): a signal may reach one rank only, and their clocks differ; the
        # slowest rank's pace schedules the next agreement.
        flag, timed_flag, pace = run.ctx.max_each((stop.received is not None, timed, agreement.pace(step)), run.device)
        agreement.agreed(step, pace)
        return flag > 0, timed_flag > 0

    def save(self, on_checkpoint) -> None:
        run, ctx = self.run, self.run.ctx
        # The saved losses are global: the mean over ranks of each rank's sums (both are linear in the losses, so
        # averaging at any step is exact), so a run resumed with another world size continues them.
        ctx.mean_([run.loss_sum, run.loss_smooth])
        if problem := non_finite_state(run):  # every rank sees the same state, so all stop together
            raise diverged(run, problem)
        run.wall_seconds += time.monotonic() - self.t_start
        self.t_start = time.monotonic()
        if ctx.is_main:
            self.saved = run.save()
            if on_checkpoint:
                on_checkpoint(run, self.saved)
        ctx.barrier()
        self.last_save = time.monotonic()

    def report_stop(self, step: int, received: str | None, stop_advice) -> None:
        if self.progress:
            self.progress.close()
        advice = stop_advice(received or "stop") if stop_advice else \
            "running the same command again continues from there"
        self.say(f"{received or 'stop'} received: saved step {step} to {self.saved}; {advice}")
