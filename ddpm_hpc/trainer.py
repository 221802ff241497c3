"""The training loop: YAML experiment in, checkpoints and metrics out. Plain code, top to bottom.

Resuming is automatic: a run starts from the newest valid checkpoint of its experiment. The batch and the noise of
step s are pure functions of (seed, s), so a resumed run continues exactly as if it had never stopped. SIGUSR2,
SIGTERM and SIGINT only set a flag; the loop saves at the next step boundary and returns ``interrupted`` (with several
ranks, at the next step where they compare flags, about a second later: every rank stops at the same step; see
``cadence.py``, which also holds the save cadence).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import __version__, cadence, checkpoint, paths, state
from .config import Experiment
from .data import BatchSampler, load_dataset, to_model_range
from .devices import deterministic_mode, resolve_device
from .distributed import DistContext, sync_batchnorm
from .ema import EMA
from .errors import TrainingDiverged
from .identity import check_same_experiment
from .fast_paths import AUTOCAST, autocast, compile_model, grad_scaler, make_adam, resolved_precision
from .logging_utils import Progress, format_seconds, log
from .models import build_model
from .objectives import Share, drop_labels, make_objective
from .run_files import REWOUND, archive_previous_run, mark_restart, restarted_under, rewind_metrics
from .schedules import make_schedule

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


@dataclass
class TrainOutcome:
    status: str  # "finished" | "interrupted"
    step: int
    signal: str | None = None
    checkpoint: Path | None = None


class StopFlag:
    """Signal handlers that only record the signal; the loop acts on it at a step boundary."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signals, self.received, self._previous = signals, None, {}

    def __enter__(self):
        for sig in self.signals:
            with contextlib.suppress(ValueError):  # not in the main thread: no handlers, no flag
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def step_seed(seed: int, step: int) -> int:
    """The seed of step s's generator: reseeded from (seed, step) so no RNG state has to survive a restart."""
    return seed * 1_000_003 + step + 1


class Run:
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
        self.schedule = make_schedule(d.schedule, d.T, d.beta1, d.beta2).to(self.device)
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

    # -- checkpoint state ---------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = state.module_tensors("model", self.model)
        if self.ema:
            tensors.update(state.module_tensors("ema", self.ema.model))
        optim, self._param_groups = state.optimizer_tensors(self.optimizer)
        tensors.update(optim)
        tensors.update(state.rng_tensors())
        tensors.update(state.scaler_tensors(self.scaler))
        tensors["train.loss_smooth"] = self.loss_smooth.detach().float().reshape(())
        tensors["train.loss_sum"] = self.loss_sum.detach().float().reshape(())
        tensors["train.log_window_start"] = torch.tensor(self.log_window_start, dtype=torch.int64)
        tensors["data.next_step"] = torch.tensor(self.step, dtype=torch.int64)  # the batch the run continues with
        return tensors

    def metadata(self) -> dict[str, str]:
        return {"format": "ddpm-hpc/1", "step": str(self.step), "config": self.exp.to_json(),
                "experiment": self.exp.name, "optim.param_groups": self._param_groups,
                "ema.updates": str(self.ema.updates if self.ema else 0), "wall_seconds": f"{self.wall_seconds:.3f}",
                "world_size": str(self.ctx.world_size), "versions": json.dumps(
                    {"ddpm_hpc": __version__, "torch": torch.__version__})}

    def validate(self, ckpt: checkpoint.Checkpoint) -> None:
        if ckpt.metadata.get("format") != "ddpm-hpc/1" or "config" not in ckpt.metadata:
            raise checkpoint.CorruptCheckpoint(f"{ckpt.path.name}: not a ddpm-hpc training checkpoint")
        check_same_experiment(self.exp, ckpt)  # a different experiment is refused outright, not skipped
        state.check_module(ckpt, "model", self.model)
        if self.ema and any(k.startswith("ema.") for k in ckpt.tensors):
            state.check_module(ckpt, "ema", self.ema.model)
        state.check_optimizer(ckpt, self.optimizer, ckpt.metadata.get("optim.param_groups"))
        window = ("train.loss_sum", "train.log_window_start") if "train.loss_sum" in ckpt.tensors else ()
        scaler = tuple(k for k in state.SCALER_KEYS if k in ckpt.tensors)
        state.check_scalars(ckpt, ("train.loss_smooth", "data.next_step", *window, *scaler))
        state.check_rng(ckpt)

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        t = {k: v.to(self.device) if not k.startswith("rng.") else v for k, v in ckpt.tensors.items()}
        state.load_module(self.model, "model", t)
        if self.ema:
            if any(k.startswith("ema.") for k in t):
                state.load_module(self.ema.model, "ema", t)
                self.ema.updates = int(ckpt.metadata.get("ema.updates", 0))
            else:  # EMA switched on mid-run: start it from the current weights
                self.ema.model.load_state_dict(self.model.state_dict())
        state.load_optimizer(self.optimizer, t, ckpt.metadata["optim.param_groups"])
        state.load_scaler(self.scaler, t)  # fp16 runs; an fp32/bf16 checkpoint resumed in fp16 starts a fresh scale
        for group in self.optimizer.param_groups:  # lr is not part of the identity: the config's value applies
            group["lr"] = self.exp.train.lr
        state.restore_rng(ckpt.tensors)
        self.loss_smooth = t["train.loss_smooth"].clone()
        if "train.loss_sum" in t:  # older checkpoints: the first metrics line after resuming averages fewer steps
            self.loss_sum = t["train.loss_sum"].clone()
            self.log_window_start = int(t["train.log_window_start"])
        else:
            self.log_window_start = int(ckpt.tensors["data.next_step"])
        self.step = int(ckpt.tensors["data.next_step"])
        self.wall_seconds = float(ckpt.metadata.get("wall_seconds", 0))

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


def _seed_first_loss(run: Run, loss: torch.Tensor) -> None:
    # The practical starts its smoothed loss at the first value; keep it on the device (no host sync).
    if run.step == 1:
        run.loss_smooth = loss.float().clone()


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
    out_dir = paths.experiment_dir(exp.name)
    metrics = out_dir / "metrics.jsonl"
    ckpt = None
    own_restart = exp.train.restart and restarted_under(exp.name, restart_token)  # started over already: resume
    if not exp.train.restart or own_restart:
        ckpt = checkpoint.load_latest(paths.checkpoint_dir(exp.name), run.validate, warn=say)
    if ckpt is not None:
        run.restore(ckpt)
        say(f"resuming {exp.name} from {ckpt.path} (step {run.step}/{exp.train.steps})")
    ctx.barrier()  # every rank has read the checkpoints before the main one moves any aside
    if ctx.is_main:
        if run.step == 0 and not own_restart:  # a fresh start never mixes with (or deletes) an earlier run's files
            moved = archive_previous_run(exp)
            if moved:
                why = "train.restart=true" if exp.train.restart else "no checkpoint to resume from"
                say(f"{why}: moved the previous run of {exp.name} aside to {' and '.join(map(str, moved))}")
            if exp.train.restart and restart_token:
                mark_restart(exp.name, restart_token)
        elif rewound := rewind_metrics(metrics, run.step):
            say(f"moved {rewound} metrics line{'s' if rewound > 1 else ''} logged after step {run.step} to "
                f"{metrics.with_name(REWOUND)}")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(exp.to_dict(), indent=1) + "\n")
    if run.step == 0:
        n = sum(p.numel() for p in run.model.parameters())
        say(f"training {exp.name}: {exp.model.arch} ({n / 1e6:.2f}M parameters), {exp.diffusion.objective}, "
            f"{exp.data.dataset} ({len(run.dataset.labels)} images), batch {exp.data.batch_size}, "
            f"{exp.train.steps} steps on {run.device}")
    elif run.step >= exp.train.steps:
        past = f", past train.steps={exp.train.steps}" if run.step > exp.train.steps else ""
        say(f"{exp.name} is already at step {run.step}{past}: nothing to train (raise train.steps to go on)")

    t_start, last_save = time.monotonic(), time.monotonic()
    # The throughput window: steps of this process only (a resumed loss window began before the restart).
    window_start, window_first_step = time.monotonic(), run.step
    loss_sum = run.loss_sum  # updated in place, so run.tensors() saves the partial window
    progress = Progress(exp.train.steps, exp.name, start=run.step) if ctx.is_main else None
    saved: Path | None = None
    every = cadence.checkpoint_every_steps(exp.train.checkpoint_every, exp.train.checkpoint_minutes, run.device.type)
    agreement = cadence.Agreement(run.step, exp.train.steps, ctx.world_size)
    with StopFlag() as stop:
        run.model.train()
        while run.step < exp.train.steps:
            loss = run.train_step()
            loss_sum += loss.float()
            _seed_first_loss(run, loss)
            run.loss_smooth += 0.01 * (loss.float() - run.loss_smooth)
            step = run.step
            if progress:
                progress(step)
            if step % exp.train.log_every == 0 or step == exp.train.steps:
                ctx.mean_([loss_sum, run.loss_smooth])  # each rank's share -> the global batch's loss (see below)
                now = time.monotonic()
                mean = (loss_sum / (step - run.log_window_start)).item()  # the only host sync: once per log line
                smooth = run.loss_smooth.item()
                if not (math.isfinite(mean) and math.isfinite(smooth)):
                    raise diverged(run, f"the loss is {mean} (mean of steps {run.log_window_start + 1}-{step})")
                rate = (step - window_first_step) * exp.data.batch_size / max(now - window_start, 1e-9)
                record = {"step": step, "loss": mean, "loss_smooth": smooth, "img_per_s": rate,
                          "wall_seconds": run.wall_seconds + now - t_start}
                if ctx.is_main:
                    with open(metrics, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    say(f"step {step:7d}/{exp.train.steps}  loss {smooth:.4f}  {rate:.0f} img/s")
                loss_sum.zero_()
                window_start, window_first_step, run.log_window_start = now, step, step
            if every_steps and exp.sample.every and step % exp.sample.every == 0 and ctx.is_main:
                every_steps(run)
            if after_step:
                after_step(run)
            stopping = timed = False
            if agreement.due(step):  # every step alone; every second or so with several ranks (ddpm_hpc/cadence.py)
                minutes = exp.train.checkpoint_minutes
                timed = minutes > 0 and time.monotonic() - last_save > 60 * minutes
                # Ranks agree on both flags (one all-reduce): a signal may reach one rank only, and their clocks
                # differ; the slowest rank's pace schedules the next agreement.
                flag, timed_flag, pace = ctx.max_each((stop.received is not None, timed, agreement.pace(step)),
                                                      run.device)
                stopping, timed = flag > 0, timed_flag > 0
                agreement.agreed(step, pace)
            if cadence.save_due(step, exp.train.steps, every, stopping, timed):
                # The saved losses are global: the mean over ranks of each rank's sums (both are linear in the losses,
                # so averaging at any step is exact), so a run resumed with another world size continues them.
                ctx.mean_([loss_sum, run.loss_smooth])
                if problem := non_finite_state(run):  # every rank sees the same state, so all stop together
                    raise diverged(run, problem)
                run.wall_seconds += time.monotonic() - t_start
                t_start = time.monotonic()
                if ctx.is_main:
                    saved = run.save()
                    if on_checkpoint:
                        on_checkpoint(run, saved)
                ctx.barrier()
                last_save = time.monotonic()
            if stopping:
                if progress:
                    progress.close()
                advice = stop_advice(stop.received or "stop") if stop_advice else \
                    "running the same command again continues from there"
                say(f"{stop.received or 'stop'} received: saved step {step} to {saved}; {advice}")
                return TrainOutcome("interrupted", step, stop.received or "peer", saved)
    say(f"finished {exp.name} at step {run.step} ({format_seconds(run.wall_seconds)} of training)")
    if saved is None and ctx.is_main:  # already complete when started: nothing new to save
        saved = ckpt.path
        if checkpoint.read_pointer(ckpt.path.parent).get("file") != ckpt.path.name:
            saved = run.save()  # the same state again, with a latest.json naming it (it was lost or named a bad file)
            say(f"rewrote {saved.parent / checkpoint.POINTER} to name {saved.name}")
    return TrainOutcome("finished", run.step, None, saved)
