"""The training loop: YAML experiment in, checkpoints and metrics out. Plain code, top to bottom.

Resuming is automatic: a run starts from the newest valid checkpoint of its experiment. The batch and the noise of
step s are pure functions of (seed, s), so a resumed run continues exactly as if it had never stopped. SIGUSR2,
SIGTERM and SIGINT only set a flag; the loop saves at the next step boundary and returns ``interrupted`` (with several
ranks, at the next step where they compare flags, about a second later: every rank stops at the same step; see
``cadence.py``, which also holds the save cadence).

``train()`` reads as its steps: resume, set up the output folder, the loop (its bookkeeping in ``train_loop.py``:
metrics lines, the stop agreement, saves), the end. A ``Run`` saves and restores itself through ``run_state.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import cadence, checkpoint, paths
from .config import Experiment
from .data import BatchSampler, load_dataset, to_model_range
from .devices import deterministic_mode, resolve_device
from .distributed import DistContext, sync_batchnorm
from .ema import EMA
from .fast_paths import AUTOCAST, autocast, compile_model, grad_scaler, make_adam, resolved_precision
from .logging_utils import format_seconds, log
from .models import build_model
from .objectives import Share, drop_labels, make_objective
from .run_dir import RunDir
from .run_files import archive_previous_run, mark_restart, restarted_under
from .run_state import RunState
from .schedules import schedule_for
from .stop_signals import StopFlag
from .train_loop import TrainLoop


@dataclass
class TrainOutcome:
    status: str  # "finished" | "interrupted"
    step: int
    signal: str | None = None
    checkpoint: Path | None = None


def step_seed(seed: int, step: int) -> int:
    """The seed of step s's generator: reseeded from (seed, step) so no RNG state has to survive a restart."""
    return seed * 1_000_003 + step + 1


class Run(RunState):
    """Everything a training run holds; built from an Experiment, saved to and restored from flat tensors."""

    def __init__(self, exp: Experiment, ctx: DistContext = DistContext(), log_fn=log):
        self.exp, self.ctx, self.log = exp, ctx, log_fn
        self.device = resolve_device(exp.train.device, ctx)
        if exp.train.deterministic:
            deterministic_mode(self.device)  # before the first CUDA kernel (cuBLAS reads its workspace setting once)
        root = Path(exp.data.root).expanduser() if exp.data.root else None
        self.dataset = load_dataset(exp.data.dataset, root)
        if exp.data.on_device:
            self.dataset = self.dataset.to(self.device)
        self.sampler = BatchSampler(len(self.dataset.labels), exp.data.batch_size, exp.data.seed)
        d = exp.diffusion
        self.schedule = schedule_for(d).to(self.device)
        self.objective = make_objective(d.objective, self.schedule)
        torch.manual_seed(exp.train.seed)
        self.model = build_model(exp.model, self.dataset.num_classes, tuple(self.dataset.images.shape[1:]))
        if ctx.enabled and exp.train.sync_batchnorm:
            self.model = sync_batchnorm(self.model, self.device)  # torch's SyncBatchNorm, or ours on CPUs
        self.model.to(self.device)
        if exp.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda" and exp.train.cudnn_benchmark and not exp.train.deterministic:
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: the autotuned algorithms pay off
        self.precision = resolved_precision(exp.train.precision, self.device)  # "bf16" | "fp16" | "fp32"
        self.autocast_dtype = AUTOCAST[self.precision]
        self.scaler = grad_scaler(self.device, self.precision)  # fp16 loss scaling; passes through otherwise
        self.optimizer = make_adam(self.model.parameters(), exp.train.lr, exp.train.adam, self.device,
                                   exp.train.channels_last)
        self.ema = EMA(self.model, exp.train.ema_decay) if exp.train.ema_decay > 0 else None
        # Several ranks: DDP averages the gradients over them in backward(). self.model stays the plain module (EMA,
        # checkpoints, sampling); self.wrapped is what the objective calls.
        self.wrapped = self.model if not ctx.enabled else DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward_model = compile_model(self.wrapped, log_fn, exp.train.compile_mode) if exp.train.compile \
            else self.wrapped
        self._compile_checked = not exp.train.compile  # the first compiled step may still fall back to eager
        self._generator = torch.Generator(device=self.device)  # reseeded every step (see step_seed)
        self.step = 0
        self.loss_smooth = torch.zeros((), device=self.device)
        self.loss_sum = torch.zeros((), device=self.device)  # losses since the last metrics line (its "loss")
        self.log_window_start = 0  # the step of the last metrics line
        self.wall_seconds = 0.0  # training time summed over all (re)starts

    def save(self) -> Path:
        folder = paths.checkpoint_dir(self.exp.name)
        tensors = self.tensors()
        return checkpoint.save_checkpoint(folder, self.step, tensors, self.metadata(), self.exp.train.keep_checkpoints)

    # -- one optimisation step ----------------------------------------------------------------------------------
    def train_step(self) -> torch.Tensor:
        exp, ctx = self.exp, self.ctx
        gen = self._generator.manual_seed(step_seed(exp.train.seed, self.step))  # one generator, not one per step
        # on the dataset's device already (the sampler keeps each epoch's order there): no copy, no wait per step
        idx = self.sampler.indices(self.step, ctx.rank, ctx.world_size, device=self.dataset.images.device)
        x0 = to_model_range(self.dataset.images[idx].to(self.device, non_blocking=True))
        if exp.train.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        labels = None
        local = exp.data.batch_size // ctx.world_size
        share = Share(ctx.rank * local, local, exp.data.batch_size)
        if exp.model.conditioning != "none":
            labels = self.dataset.labels[idx].to(self.device, non_blocking=True)
            labels = drop_labels(labels, self.dataset.num_classes, exp.train.label_dropout, share, gen)
        if self.forward_model is not self.wrapped and self.device.type == "cuda" and \
                exp.train.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are no longer needed
        self.optimizer.zero_grad(set_to_none=True)
        buffers = None if self._compile_checked else [b.detach().clone() for b in self.model.buffers()]
        try:
            with autocast(self.device, self.precision):
                loss = self.objective(self.forward_model, x0, labels, gen, share)
            self.scaler.scale(loss).backward()  # compiled models compile their backward here, at the first step
        except Exception as exc:  # compile backends fail in many ways (no C++ compiler, unsupported op)
            if buffers is None:
                raise
            self.log(f"warning: torch.compile failed ({type(exc).__name__}: {str(exc).strip()[:200]}); "
                     f"training in eager mode")
            with torch.no_grad():  # undo BatchNorm statistics a compiled forward may have updated
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)
            self.forward_model, self._compile_checked = self.wrapped, True
            return self.train_step()  # redo the step from scratch: same batch, same noise
        self._compile_checked = True
        if exp.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # fp16: clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), exp.train.grad_clip)
        # fp16: a step whose scaled gradients overflowed is skipped here and the scale lowered. That is loss scaling
        # at work, not divergence: the NaN guard looks at the unscaled loss and the weights only.
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema:
            self.ema.update(self.model)
        self.step += 1
        return loss.detach()


def train(exp: Experiment, ctx: DistContext = DistContext(), log_fn: Callable[[str], None] = log,
          on_checkpoint: Callable[[Run, Path], None] | None = None,
          every_steps: Callable[[Run], None] | None = None,
          after_step: Callable[[Run], None] | None = None, restart_token: str | None = None,
          stop_advice: Callable[[str], str] | None = None) -> TrainOutcome:
    """Train ``exp`` to ``train.steps``, resuming from its latest valid checkpoint. ``on_checkpoint`` runs after each
    save (e.g. to refresh the loss plot); ``every_steps`` runs every ``sample.every`` steps (preview grids);
    ``after_step`` runs after every step, before the stop check (the SLURM tests use it to slow tiny runs down).

    ``train.restart=true`` starts over every time without ``restart_token``; with one (a batch job that may be re-run
    from the top), only once: the run that started over for that token resumes. ``stop_advice(signal name)`` says what
    happens after a stop signal (default: run the same command again)."""
    say = log_fn if ctx.is_main else (lambda *_: None)
    run = Run(exp, ctx, say)
    ckpt, own_restart = _resume(run, restart_token, say)
    ctx.barrier()  # every rank has read the checkpoints before the main one moves any aside
    if ctx.is_main:
        _set_up_output_folder(run, own_restart, restart_token, say)
    _announce(run, say)
    loop = TrainLoop(run, say)
    with StopFlag() as stop:
        run.model.train()
        while run.step < exp.train.steps:
            loop.add_loss(run.train_step())
            step = run.step
            if loop.progress:
                loop.progress(step)
            if step % exp.train.log_every == 0 or step == exp.train.steps:
                loop.log_line(step)
            if every_steps and exp.sample.every and step % exp.sample.every == 0 and ctx.is_main:
                every_steps(run)
            if after_step:
                after_step(run)
            stopping, timed = loop.agree_on_stop(step, stop)
            if cadence.save_due(step, exp.train.steps, loop.every, stopping, timed):
                loop.save(on_checkpoint)
            if stopping:
                loop.report_stop(step, stop.received, stop_advice)
                return TrainOutcome("interrupted", step, stop.received or "peer", loop.saved)
    return _finish(run, ckpt, loop.saved, say)


def _resume(run: Run, restart_token: str | None, say) -> tuple[checkpoint.Checkpoint | None, bool]:
    """Restore ``run`` from its newest valid checkpoint (none with train.restart, unless this token's run already
    started over). Returns the checkpoint and whether the run started over under ``restart_token`` before."""
    exp, ckpt = run.exp, None
    own_restart = exp.train.restart and restarted_under(exp.name, restart_token)  # started over already: resume
    if not exp.train.restart or own_restart:
        ckpt = checkpoint.load_latest(paths.checkpoint_dir(exp.name), run.validate, warn=say)
    if ckpt is not None:
        run.restore(ckpt)
        say(f"resuming {exp.name} from {ckpt.path} (step {run.step}/{exp.train.steps})")
    return ckpt, own_restart


def _set_up_output_folder(run: Run, own_restart: bool, restart_token: str | None, say) -> None:
    """The main rank: a fresh start moves an earlier run's files aside, a resumed one drops the metrics lines logged
    after its checkpoint; then the experiment's config.json."""
    exp, run_dir = run.exp, RunDir(run.exp.name)
    if run.step == 0 and not own_restart:  # a fresh start never mixes with (or deletes) an earlier run's files
        moved = archive_previous_run(exp)
        if moved:
            why = "train.restart=true" if exp.train.restart else "no checkpoint to resume from"
            say(f"{why}: moved the previous run of {exp.name} aside to {' and '.join(map(str, moved))}")
        if exp.train.restart and restart_token:
            mark_restart(exp.name, restart_token)
    elif rewound := run_dir.rewind_metrics(run.step):
        say(f"moved {rewound} metrics line{'s' if rewound > 1 else ''} logged after step {run.step} to "
            f"{run_dir.rewound}")
    run_dir.write_config(exp.to_dict())


def _announce(run: Run, say) -> None:
    exp = run.exp
    if run.step == 0:
        n = sum(p.numel() for p in run.model.parameters())
        say(f"training {exp.name}: {exp.model.arch} ({n / 1e6:.2f}M parameters), {exp.diffusion.objective}, "
            f"{exp.data.dataset} ({len(run.dataset.labels)} images), batch {exp.data.batch_size}, "
            f"{exp.train.steps} steps on {run.device}")
    elif run.step >= exp.train.steps:
        past = f", past train.steps={exp.train.steps}" if run.step > exp.train.steps else ""
        say(f"{exp.name} is already at step {run.step}{past}: nothing to train (raise train.steps to go on)")


def _finish(run: Run, ckpt: checkpoint.Checkpoint | None, saved: Path | None, say) -> TrainOutcome:
    say(f"finished {run.exp.name} at step {run.step} ({format_seconds(run.wall_seconds)} of training)")
    if saved is None and run.ctx.is_main:  # already complete when started: nothing new to save
        saved = ckpt.path
        if checkpoint.read_pointer(ckpt.path.parent).get("file") != ckpt.path.name:
            saved = run.save()  # the same state again, with a latest.json naming it (it was lost or named a bad file)
            say(f"rewrote {saved.parent / checkpoint.POINTER} to name {saved.name}")
    return TrainOutcome("finished", run.step, None, saved)
