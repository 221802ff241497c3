"""The sampling job's core: checkpoint -> model (EMA weights when present) -> sampler -> grid files.

Writes into ``experiments/<exp>/samples/``: ``<tag>.png`` (one row per class for conditional models, a square grid
otherwise), ``<tag>.safetensors`` (raw uint8 ``images`` and int64 ``labels``) and ``<tag>.json`` (what produced it).
``<tag>`` names the step, sampler and steps, DDIM eta, time grid, guidance (with its interval and schedule), number
of images and seed (``step0001500-heun10-w2-n100-seed1234``, ``step0010000-flow_dpmpp2m8-edm7-w2-gi0.3-5-n500-seed1``),
so other settings never overwrite it; files of the same tag drawn from another checkpoint (``sample.checkpoint=<file>``)
are never replaced.

The sampler, its steps and guidance must fit the network: they are checked against the config stored in the
checkpoint (its objective, T and conditioning), not against the current YAML.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as save_bytes

from . import checkpoint, paths, state
from .checkpoint import Checkpoint, CorruptCheckpoint
from .config import Experiment, build_experiment, experiment_from_json
from .data import DATASETS
from .distributed import DistContext
from .errors import UserError
from .images import display, save_grid
from .logging_utils import Progress, log
from .models import build_model
from .run_dir import RunDir
from .safe_write import atomic_write
from .samplers import guided, noise_levels, solve
from .schedules import schedule_for
from .devices import resolve_device
from .fast_paths import autocast, resolved_precision

NUM_CLASSES = {name: 10 for name in DATASETS}


@dataclass
class Sampled:
    images: torch.Tensor  # uint8 N x C x H x W
    labels: torch.Tensor | None
    trajectory: list[torch.Tensor]  # uint8 snapshots x_T ... x_0 of the first few samples
    nfe: int | float  # network evaluations per image, counted (CountingNet)
    seconds: float


class CountingNet:
    """The network, counting the batch rows it evaluates: NFE per image = rows / images drawn, whatever the sampler
    and however guidance batches its branches (both branches of classifier-free guidance count)."""

    def __init__(self, net):
        self.net, self.rows = net, 0

    def __call__(self, x, t, labels=None):
        self.rows += x.shape[0]
        return self.net(x, t, labels)


def per_image(rows: int, n: int) -> int | float:
    """Rows evaluated per image drawn: a whole number for every sampler here, else 3 decimals."""
    value = rows / max(n, 1)
    return int(value) if value == int(value) else round(value, 3)


def find_checkpoint(name: str, which: str = "latest") -> Checkpoint:
    """``latest``, a step number, or a path to a ``.safetensors`` file."""
    folder = paths.checkpoint_dir(name)
    if which not in ("latest", "") and not which.isdigit():
        path = Path(which).expanduser()
        if not path.is_file():
            raise UserError(f"sample.checkpoint={which}: no such file")
        try:
            return checkpoint.read_checkpoint(path)
        except CorruptCheckpoint as exc:
            raise UserError(f"cannot use checkpoint {exc}") from None
    if which.isdigit():
        recorded = checkpoint.recorded_hashes(folder)
        path = folder / checkpoint.checkpoint_name(int(which))
        if not path.is_file():
            have = sorted(p.name for p in folder.glob("step-*.safetensors"))
            raise UserError(f"no checkpoint for step {which} in {folder}; available: {', '.join(have) or 'none'}")
        try:
            return checkpoint.read_checkpoint(path, recorded.get(path.name))
        except CorruptCheckpoint as exc:
            raise UserError(f"cannot use checkpoint {exc}") from None
    ckpt = checkpoint.load_latest(folder, warn=log)
    if ckpt is None:
        raise UserError(f"no checkpoint of '{name}' in {folder}; train it first (make local EXP={name} "
                        f"or make submit EXP={name})")
    return ckpt


def load_model(ckpt: Checkpoint, device: torch.device, prefer_ema: bool = True):
    """Rebuild the network from the config stored in the checkpoint and load its (EMA) weights."""
    trained = experiment_from_json(ckpt.metadata["config"])
    model = build_model(trained.model, NUM_CLASSES[trained.data.dataset])
    use_ema = prefer_ema and any(k.startswith("ema.") for k in ckpt.tensors)
    prefix = "ema" if use_ema else "model"
    try:
        state.check_shapes(ckpt, prefix, model)
    except CorruptCheckpoint as exc:
        raise UserError(f"cannot use checkpoint {exc}") from None
    state.load_module(model, prefix, ckpt.tensors)
    return trained, model.to(device).eval(), prefix


def sampling_config(trained: Experiment, exp: Experiment, source: Path) -> Experiment:
    """The config the network was trained with, with the ``sample`` section of ``exp``, checked by the config's own
    rules: a sampler that does not fit the trained objective (ddpm/ddim for ddpm, euler/heun for flow), steps beyond
    the trained T or guidance on an unconditional network would otherwise draw noise without a word."""
    d, m = trained.diffusion, trained.model
    where = (f"checkpoint {source} (trained with diffusion.objective={d.objective}, diffusion.T={d.T}, "
             f"model.conditioning={m.conditioning}, train.label_dropout={trained.train.label_dropout:g})")
    data = {k: v for k, v in trained.to_dict().items() if k != "name"}
    return build_experiment(exp.name, {**data, "sample": dataclasses.asdict(exp.sample)}, where)


@dataclass
class Loaded:
    """A checkpoint ready to sample from."""
    ckpt: Checkpoint
    exp: Experiment  # the trained config with the requested sample settings (see sampling_config)
    model: torch.nn.Module
    weights: str  # "ema" or "model"
    precision: str  # "bf16", "fp16" or "fp32": the user's train.precision on this device


def load_for_sampling(exp: Experiment, device: torch.device) -> Loaded:
    """The checkpoint ``exp.sample.checkpoint`` of ``exp``, its network and the sample settings checked against it.
    The network runs under the autocast of ``exp``'s train.precision (sampling picks it by the training rule)."""
    ckpt = find_checkpoint(exp.name, exp.sample.checkpoint)
    trained, model, weights = load_model(ckpt, device)
    precision = resolved_precision(exp.train.precision, device)
    return Loaded(ckpt, sampling_config(trained, exp, ckpt.path), model, weights, precision)


def sample_images(exp: Experiment, model, device: torch.device, labels: torch.Tensor | None, n: int, keep: int = 0,
                  precision: str = "fp32") -> Sampled:
    """Draw n images from ``model`` with the sampler settings of ``exp.sample``; ``exp`` is the config the network
    was trained with and the sample settings to use (``sampling_config``). The noise comes from ``sample.seed``. The
    network runs under autocast for ``precision`` ("bf16" | "fp16" | "fp32", resolved); the sampler's arithmetic
    stays fp32."""
    s = exp.sample
    steps = exp.sample_steps
    d = exp.diffusion
    schedule = schedule_for(d).to(device)
    generator = torch.Generator(device=device).manual_seed(s.seed)
    noise = torch.randn((n, 3, 32, 32), generator=generator, device=device)
    out, trajectory = [], []
    t0 = time.monotonic()
    batches = range(0, n, s.batch_size)
    progress = Progress(len(batches) * steps, f"sampling {s.sampler}")
    net = CountingNet(model)
    with torch.inference_mode(), autocast(device, precision):
        for b, start in enumerate(batches):
            x = noise[start:start + s.batch_size]
            y = labels[start:start + s.batch_size] if labels is not None else None
            fn = guided(net, y, s.guidance, NUM_CLASSES[exp.data.dataset], interval=s.guidance_interval,
                        schedule=s.guidance_schedule, levels=noise_levels(d.objective, schedule))
            x0, traj = solve(s.sampler, fn, x, schedule, steps=steps, eta=s.eta, generator=generator,
                             time_grid=s.time_grid, rho=s.rho, shift=s.shift, keep=keep if b == 0 else 0,
                             progress=lambda i, total, b=b: progress(b * total + i))
            out.append(display(x0))
            if traj:
                trajectory = [display(t[:min(8, len(t))]) for t in traj]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Sampled(torch.cat(out), labels.cpu() if labels is not None else None, trajectory, per_image(net.rows, n),
                   time.monotonic() - t0)


def class_blocks(classes: int, n: int, device) -> torch.Tensor:
    """n labels in blocks of classes (0 0 .. 1 1 .. ), as a grid's rows are: the layout every conditional draw uses,
    so an eval of n images and a grid of n images with the same seed are the same images."""
    return torch.arange(classes, device=device).repeat_interleave(math.ceil(n / classes))[:n]


def grid_labels(exp: Experiment, device) -> tuple[torch.Tensor | None, int, int]:
    """Labels for the grid (rows of classes: 0..9 repeated per_class times in columns), count and row width."""
    if exp.model.conditioning == "none":
        n = exp.sample.n
        return None, n, max(1, round(math.sqrt(n)))
    k, per = NUM_CLASSES[exp.data.dataset], exp.sample.per_class
    return class_blocks(k, k * per, device), k * per, per


def sample_tag(step: int, exp: Experiment, conditional: bool, n: int | None = None) -> str:
    """``step0001500-heun10-w2-n100-seed1234``: n images (default: the grid ``exp`` describes) of ``exp.sample``."""
    s = exp.sample
    if n is None:
        n = grid_labels(exp, "cpu")[1]
    tag = f"step{step:07d}-{s.sampler}{exp.sample_steps}"
    if s.sampler == "ddim" and s.eta:
        tag += f"-eta{s.eta:g}"
    if s.time_grid != "uniform":
        tag += f"-{s.time_grid}{s.grid_parameter:g}"
    if conditional and s.guidance != 1.0:
        tag += f"-w{s.guidance:g}"
        if s.guidance_interval:
            tag += "-gi{:g}-{:g}".format(*s.guidance_interval)
        if s.guidance_schedule != "constant":
            tag += f"-g{s.guidance_schedule}"
    return f"{tag}-n{n}-seed{s.seed}"


METHOD_KEYS = ("time_grid", "rho", "shift", "guidance_interval", "guidance_schedule")


def method_settings(exp: Experiment) -> dict:
    """The few-step and guidance settings of ``exp.sample`` (docs/quality.md), for provenance files."""
    return {key: getattr(exp.sample, key) for key in METHOD_KEYS}


def check_not_taken(folder: Path, tag: str, ckpt: Checkpoint) -> None:
    """Refuse to replace sample files of this tag drawn from another checkpoint of the same step; the same checkpoint
    with the same settings draws the same images again, so those may be rewritten."""
    taken = [p.name for p in (folder / f"{tag}{ext}" for ext in (".png", ".safetensors", ".json")) if p.exists()]
    if not taken:
        return
    try:
        recorded = json.loads((folder / f"{tag}.json").read_text()).get("checkpoint_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded != ckpt.sha256:
        raise UserError(f"{folder / taken[0]} holds samples of another checkpoint (SHA-256 {str(recorded)[:12]}), "
                        f"not of {ckpt.path}; move {tag}.* away to keep them, then sample again")


def write_samples(folder: Path, tag: str, result: Sampled, info: dict, nrow: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    png = save_grid(result.images, folder / f"{tag}.png", nrow=nrow)
    tensors = {"images": result.images.contiguous()}
    if result.labels is not None:
        tensors["labels"] = result.labels.to(torch.int64).contiguous()
    atomic_write(folder / f"{tag}.safetensors", save_bytes(tensors, metadata={"tag": tag}))
    if result.trajectory:
        strip = torch.stack(result.trajectory, dim=1).flatten(0, 1)  # rows: samples, columns: x_T ... x_0
        save_grid(strip, folder / f"{tag}-trajectory.png", nrow=len(result.trajectory))
        info["trajectory"] = f"{tag}-trajectory.png"
    atomic_write(folder / f"{tag}.json", (json.dumps(info, indent=1) + "\n").encode())
    return png


def sample_experiment(exp: Experiment, log_fn=log, out_folder: Path | None = None) -> Path:
    """Sample ``exp``'s checkpoint (``sample.checkpoint``) and write the grid files; returns the PNG path."""
    device = resolve_device(exp.train.device, DistContext())
    run = load_for_sampling(exp, device)
    ckpt, exp = run.ckpt, run.exp
    labels, n, nrow = grid_labels(exp, device)
    tag = sample_tag(ckpt.step, exp, labels is not None, n)
    folder = out_folder or RunDir(exp.name).samples
    check_not_taken(folder, tag, ckpt)
    log_fn(f"sampling {exp.name} step {ckpt.step} ({run.weights} weights) with {exp.sample.sampler}, "
           f"{exp.sample_steps} steps, {n} images on {device} ({run.precision})")
    result = sample_images(exp, run.model, device, labels, n, keep=8 if exp.sample.trajectory else 0,
                           precision=run.precision)
    info = {"experiment": exp.name, "checkpoint": str(ckpt.path), "checkpoint_sha256": ckpt.sha256,
            "step": ckpt.step, "weights": run.weights, "sampler": exp.sample.sampler, "steps": exp.sample_steps,
            "eta": exp.sample.eta, "guidance": exp.sample.guidance, **method_settings(exp),
            "nfe_per_image": result.nfe, "seed": exp.sample.seed, "images": n, "wall_seconds": round(result.seconds, 3),
            "device": str(device), "precision": run.precision, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    png = write_samples(folder, tag, result, info, nrow)
    log_fn(f"wrote {png} ({result.seconds:.1f} s, {result.nfe} network evaluations per image)")
    return png
