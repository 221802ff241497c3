"""A diverged run: what is not finite in the state about to be saved, and the error that stops the run with it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import checkpoint, paths
from .errors import TrainingDiverged

if TYPE_CHECKING:
    from .trainer import Run


def non_finite_state(run: Run) -> str | None:
    """What is not finite in the state about to be saved (None: all is well). The smoothed loss keeps any NaN or
    infinity since this process started, so with the weights it catches one between log lines; one sync per save."""
    if not torch.isfinite(run.loss_smooth).all():
        return f"the smoothed loss is {run.loss_smooth.item()}"
    bad = [name for name, p in run.model.named_parameters() if not torch.isfinite(p).all()]
    return f"{len(bad)} weight tensors hold NaN or infinity ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})" \
        if bad else None


def diverged(run: Run, problem: str) -> TrainingDiverged:
    """The error that stops a diverged run: what broke, and that the last good checkpoint is kept."""
    last = checkpoint.newest_file(paths.checkpoint_dir(run.exp.name))
    kept = f"nothing saved, the last checkpoint ({last.name}) is kept" if last else \
        "nothing saved (there is no earlier checkpoint)"
    remedies = [f"Lower train.lr (now {run.exp.train.lr:g})"]
    if run.exp.train.grad_clip <= 0:
        remedies.append("set train.grad_clip (e.g. 1.0)")
    if run.autocast_dtype is not None:
        remedies.append("use train.precision=fp32")
    return TrainingDiverged(f"training {run.exp.name} diverged at step {run.step}: {problem}; {kept}. "
                            f"{', '.join(remedies[:-1]) + ' or ' if len(remedies) > 1 else ''}{remedies[-1]}, "
                            f"then run again")
