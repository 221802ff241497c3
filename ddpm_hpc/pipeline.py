"""What a training or sampling job does, with or without SLURM: the same functions serve ``make local``,
``make demo`` and the submitit jobs in ``jobs/``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import paths, tensorboard_log
from .config import Experiment
from .distributed import DistContext
from .figures import forward_process_figure, loss_plot
from .logging_utils import log
from .report import refresh as refresh_report
from .sampling import sample_experiment
from .trainer import Run, TrainOutcome, train


def refresh_loss_plot(exp: Experiment) -> Path | None:
    out = paths.experiment_dir(exp.name)
    return loss_plot(out / "metrics.jsonl", out / "loss.png", title=exp.name)


def write_forward_figure(run: Run) -> Path:
    """The practical's section-3 figure for the current weights (EMA when present)."""
    n = 10
    idx = run.sampler.indices(0)[:n].to(run.dataset.images.device)
    labels = run.dataset.labels[idx].to(run.device) if run.exp.model.conditioning != "none" else None
    model = run.ema.model if run.ema else run.model
    path = paths.experiment_dir(run.exp.name) / "forward_process.png"
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
    labels, n, nrow = grid_labels(exp, exp, run.device)
    result = sample_images(exp, model, exp, run.device, labels, n)
    model.train(was_training)
    tag = "preview-" + sample_tag(run.step, exp, labels is not None)
    info = {"experiment": exp.name, "step": run.step, "sampler": exp.sample.sampler, "steps": exp.sample_steps,
            "nfe_per_image": result.nfe, "seed": exp.sample.seed, "preview": True}
    return write_samples(paths.experiment_dir(exp.name) / "samples", tag, result, info, nrow)


def run_training(exp: Experiment, ctx: DistContext = DistContext(), log_fn=log, after_step=None) -> TrainOutcome:
    holder: dict = {}
    if exp.train.tensorboard:
        tensorboard_log.require()  # before any work: one line, not a traceback mid-run
    tb = tensorboard_log.TensorBoardLog(exp.name) if exp.train.tensorboard and ctx.is_main else None

    def on_checkpoint(run: Run, _path: Path) -> None:
        holder["run"] = run
        refresh_loss_plot(exp)
        refresh_report(exp.name, log_fn)
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
                        after_step=each_step if tb or after_step else None)
    finally:
        if tb:
            tb.close()
    if ctx.is_main and outcome.status == "finished" and "run" in holder:
        log_fn(f"wrote {write_forward_figure(holder['run'])}")
        log_fn(f"wrote {paths.experiment_dir(exp.name) / 'loss.png'}")  # drawn at the final checkpoint
        refresh_report(exp.name, log_fn)  # again: forward_process.png is written after the last checkpoint
    return outcome


def run_sampling(exp: Experiment, log_fn=log) -> Path:
    png = sample_experiment(exp, log_fn)
    page = refresh_report(exp.name, log_fn)
    if page:
        log_fn(f"wrote {page}")
    return png
