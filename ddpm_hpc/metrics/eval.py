"""The eval job: N samples of an experiment (fresh from a checkpoint, or an existing ``samples/<tag>.safetensors``),
scored by the toolkit's classifier (conditional accuracy, classifier FD) and by FID when the Inception weights file
is present, each distance next to its real-data floor at the same N and class counts (``floor.py``), written to
``experiments/<exp>/eval/`` with N, sampler, steps, NFE (network evaluations per image), guidance and checkpoint:

- ``fresh-<tag>.json`` for images drawn by the eval itself, ``<tag>`` as for sample grids
  (``fresh-step0001500-heun10-w2-n1000-seed1234.json``);
- ``samples-<stem>.json`` for the images of ``samples/<stem>.safetensors`` (``samples-<stem>-first<k>.json`` when
  ``--n`` takes only the first k of them).

An existing eval file is never replaced without ``--force``. Sampler settings come from the experiment's ``sample``
section and ``sample.*`` overrides, exactly as for ``sample`` (``ddpm-hpc eval mnist_best sample.sampler=euler
sample.steps=20``), checked against the checkpoint's training config; the noise comes from ``sample.seed``.
Everything that can fail cheaply (the checkpoint and sampler, the output name, the FID weights) is checked before
sampling.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes

from ..config import Experiment
from ..distributed import DistContext
from ..errors import UserError
from ..logging_utils import log
from ..devices import resolve_device
from ..run_dir import RunDir
from ..safe_write import atomic_write
from ..sampling import (METHOD_KEYS, NUM_CLASSES, Loaded, class_blocks, load_for_sampling, method_settings,
                        sample_images, sample_tag)
from . import classifier, fid  # noqa: F401 - tests patch them through this module
from .scoring import make_scorer, summary


DEFAULT_N = 1000  # images drawn by an evaluation without --n (with --samples: all of the file's)


def _plan_fresh(run: Loaded, n: int) -> tuple[dict, str]:
    """What drawing n images from ``run`` will be (its provenance) and the eval file's stem."""
    exp, ckpt = run.exp, run.ckpt
    tag = sample_tag(ckpt.step, exp, exp.model.conditioning != "none", n)
    info = {"tag": tag, "source": "checkpoint", "checkpoint": str(ckpt.path), "checkpoint_sha256": ckpt.sha256,
            "step": ckpt.step, "weights": run.weights, "dataset": exp.data.dataset, "sampler": exp.sample.sampler,
            "steps": exp.sample_steps, "eta": exp.sample.eta, "guidance": exp.sample.guidance, "seed": exp.sample.seed,
            **method_settings(exp)}
    return info, f"fresh-{tag}"


def _draw(run: Loaded, n: int, device, log_fn) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    exp = run.exp
    conditional = exp.model.conditioning != "none"
    labels = class_blocks(NUM_CLASSES[exp.data.dataset], n, device) if conditional else None
    log_fn(f"eval {exp.name}: sampling {n} images from step {run.ckpt.step} ({run.weights} weights) with "
           f"{exp.sample.sampler}, {exp.sample_steps} steps" + (f", guidance {exp.sample.guidance:g}" if conditional
                                                                 else "") + f" on {device}")
    result = sample_images(exp, run.model, device, labels, n, precision=run.precision)
    return result.images, result.labels, {"nfe_per_image": result.nfe, "sampling_seconds": round(result.seconds, 2),
                                          "precision": run.precision}


def balanced_subset(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of n images taking the classes in turn (each class's first image, then each one's second, ...), so
    a part of a grid (which is sorted by class) is as balanced as the whole."""
    rank = torch.empty_like(labels)
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        rank[members] = torch.arange(len(members))
    order = torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)
    return order[:n].sort().values


def _from_file(exp: Experiment, samples: str, n: int | None,
               log_fn) -> tuple[torch.Tensor, torch.Tensor | None, dict, str]:
    path = Path(samples)
    if not path.is_file():
        path = RunDir(exp.name).samples / (samples if samples.endswith(".safetensors") else f"{samples}.safetensors")
    if not path.is_file():
        raise UserError(f"--samples {samples}: no such file (nor {path})")
    data = path.read_bytes()
    try:
        tensors = load_bytes(data)
    except SafetensorError as exc:
        raise UserError(f"--samples {path}: not a safetensors file ({exc})") from None
    images, labels = tensors.get("images"), tensors.get("labels")
    if images is None or images.dtype != torch.uint8 or tuple(images.shape[1:]) != (3, 32, 32) or len(images) < 2 \
            or (labels is not None and labels.shape != images.shape[:1]):
        raise UserError(f"--samples {path}: expected 'images' (uint8, N x 3 x 32 x 32, N >= 2) and optionally "
                        f"N 'labels', as `ddpm-hpc sample` writes them")
    stem = f"samples-{path.stem}"
    if n is not None and n < len(images):
        keep = balanced_subset(labels, n) if labels is not None else torch.arange(n)
        images, labels = images[keep], labels[keep] if labels is not None else None
        stem += f"-first{n}"
    elif n is not None and n > len(images):
        log_fn(f"--samples {path.name} holds {len(images)} images: scoring all of them, not {n}")
    try:
        recorded = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        recorded = {}  # samples without their provenance file: scored all the same
    info = {"tag": path.stem, "source": "samples", "samples": str(path),
            "samples_sha256": hashlib.sha256(data).hexdigest(), "dataset": exp.data.dataset}
    for key in ("checkpoint", "checkpoint_sha256", "step", "weights", "sampler", "steps", "eta", "guidance",
                "nfe_per_image", "seed", *METHOD_KEYS):
        info[key] = recorded.get(key)
    return images, labels, info, stem


def run_eval(exp: Experiment, n: int | None = None, fid_weights: str | None = None, samples: str | None = None,
             fid_ref_images: int = 0, force: bool = False, log_fn=log) -> Path:
    """Sample (or read) N images, score them, write ``experiments/<exp>/eval/<name>.json``; returns its path."""
    t0 = time.monotonic()
    device = resolve_device(exp.train.device, DistContext())
    run = None
    if samples:
        images, labels, info, stem = _from_file(exp, samples, n, log_fn)
    else:
        run = load_for_sampling(exp, device)
        n = n or DEFAULT_N
        info, stem = _plan_fresh(run, n)
    out = RunDir(exp.name).eval / f"{stem}.json"
    if out.exists() and not force:
        raise UserError(f"{out} exists (made by an earlier eval); pass --force to replace it, or move it away")
    scorer = make_scorer(info["dataset"], device, fid_weights, fid_ref_images, log_fn)
    if run is not None:
        images, labels, drawn = _draw(run, n, device, log_fn)
        info.update(drawn)
    result = {"experiment": exp.name, "n": len(images), **info}
    result.update(scorer.score(images, labels, log_fn))
    result.update({"eval_seconds": round(time.monotonic() - t0, 1), "device": str(device),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
    log_fn(f"wrote {out}: {summary(result)}")
    return out
