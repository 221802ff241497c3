"""What a training or sampling job does, with or without SLURM: the same functions serve ``make local``,
``make demo`` and the submitit jobs in ``jobs/``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import tensorboard_log
from .cadence import Throttle
from .config import Experiment
from .distributed import DistContext
from .figures import forward_process_figure, loss_plot
from .logging_utils import log
from .report import refresh as refresh_report
from .run_dir import RunDir
from .sampling import sample_experiment
from .stop_signals import StopFlag
from .trainer import Run, TrainOutcome, train


def refresh_loss_plot(exp: Experiment) -> Path | None:
    run_dir = RunDir(exp.name)
    return loss_plot(run_dir.read_metrics(), run_dir.loss_plot, title=exp.name)


def write_forward_figure(run: Run) -> Path:
    """The practical's section-3 figure for the current weights (EMA when present)."""
    n = 10
    idx = run.sampler.indices(0)[:n].to(run.dataset.images.device)
    labels = run.dataset.labels[idx].to(run.device) if run.exp.model.conditioning != "none" else None
    model = run.ema.model if run.ema else run.model
    path = RunDir(run.exp.name).forward_figure
    return forward_process_figure(model, run.objective, run.dataset.images[idx], labels, path)


def preview_grid(run: Run) -> Path:
    """``sample.every``: a small grid with the cheap sampler settings, to watch progress in the report. Returns the
    PNG's path."""
    from .sampling import grid_labels, sample_images, sample_tag, write_samples

    cheap = {"sampler": "ddim", "steps": min(50, run.exp.diffusion.T), "eta": 0.0} \
        if run.exp.diffusion.objective == "ddpm" else {"sampler": "euler", "steps": 20}
    exp = run.exp.replace(sample=dataclasses.replace(run.exp.sample, per_class=2, n=16, **cheap))
    model = run.ema.model if run.ema else run.model
    was_training = model.training
    model.eval()
    labels, n, nrow = grid_labels(exp, run.device)
    result = sample_images(exp, model, run.device, labels, n, precision=run.precision)
    model.train(was_training)
    tag = "preview-" + sample_tag(run.step, exp, labels is not None)
    info = {"experiment": exp.name, "step": run.step, "sampler": exp.sample.sampler, "steps": exp.sample_steps,
            "nfe_per_image": result.nfe, "seed": exp.sample.seed, "preview": True}
    return write_samples(RunDir(exp.name).samples, tag, result, info, nrow)


def run_training(exp: Experiment, ctx: DistContext = DistContext(), log_fn=log, after_step=None,
                 restart_token: str | None = None, stop_advice=None) -> TrainOutcome:
    """Train, refreshing the loss plot and the report page after a save at most once per ``train.report_minutes``
    (the other ranks wait while rank 0 draws them), and always at the end, finished or interrupted
    (``restart_token``, ``stop_advice``: see ``train``)."""
    holder: dict = {"stale": False}
    throttle = Throttle(60 * exp.train.report_minutes)
    if exp.train.tensorboard:
        tensorboard_log.require()  # before any work: one line, not a traceback mid-run
    tb = tensorboard_log.TensorBoardLog(exp.name) if exp.train.tensorboard and ctx.is_main else None

    def refresh() -> None:
        refresh_loss_plot(exp)
        refresh_report(exp.name, log_fn)
        holder["stale"] = False

    def on_checkpoint(run: Run, _path: Path) -> None:
        holder["run"], holder["stale"] = run, True
        if throttle.ready():
            refresh()
        if tb:
            tb.flush()

    def every_steps(run: Run) -> None:
        png = preview_grid(run)
        if tb:
            tb.preview(run, png)

    def each_step(run: Run) -> None:
        if tb:
            tb.after_step(run)
        if after_step:
            after_step(run)

    try:
        outcome = train(exp, ctx, log_fn, on_checkpoint=on_checkpoint, every_steps=every_steps,
                        after_step=each_step if tb or after_step else None, restart_token=restart_token,
                        stop_advice=stop_advice)
    finally:
        if tb:
            tb.close()
    # Training has saved what it had: a stop signal from here on (e.g. a time-limit warning while the figures are
    # drawn) finds nothing to save, so it must not interrupt the figures or make a finished job requeue itself.
    with StopFlag() as late:
        if ctx.is_main and outcome.status == "finished" and "run" in holder:
            log_fn(f"wrote {write_forward_figure(holder['run'])}")
            refresh()  # again: forward_process.png is written after the last checkpoint
            log_fn(f"wrote {RunDir(exp.name).loss_plot}")
        elif ctx.is_main and holder["stale"]:  # interrupted: the page shows the step it stopped at
            refresh()
    if late.received:
        log_fn(f"{late.received} received after training {outcome.status} at step {outcome.step}: nothing left to save")
    return outcome


def run_sampling(exp: Experiment, log_fn=log) -> Path:
    png = sample_experiment(exp, log_fn)
    page = refresh_report(exp.name, log_fn)
    if page:
        log_fn(f"wrote {page}")
    return png
