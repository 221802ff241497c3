"""The eval job: N samples of an experiment (fresh from a checkpoint, or an existing ``samples/<tag>.safetensors``),
scored by the toolkit's classifier (conditional accuracy, classifier FD) and by FID when the Inception weights file
is present, written to ``experiments/<exp>/eval/<tag>.json`` with N, sampler, steps, NFE, guidance and checkpoint.

Sampler settings come from the experiment's ``sample`` section and ``sample.*`` overrides, exactly as for ``sample``
(``ddpm-hpc eval mnist_best sample.sampler=euler sample.steps=20``); the noise from ``sample.seed``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from .. import paths
from ..checkpoint import atomic_write
from ..config import Experiment
from ..distributed import DistContext
from ..errors import UserError
from ..logging_utils import log
from ..sampling import NUM_CLASSES, find_checkpoint, load_model, sample_images, sample_tag
from ..trainer import resolve_device
from . import classifier, fid


def _from_checkpoint(exp: Experiment, n: int, device, log_fn) -> tuple[torch.Tensor, torch.Tensor | None, dict, str]:
    ckpt = find_checkpoint(exp.name, exp.sample.checkpoint)
    trained, model, weights = load_model(ckpt, device)
    conditional = trained.model.conditioning != "none"
    k = NUM_CLASSES[trained.data.dataset]
    labels = torch.arange(n, device=device) % k if conditional else None  # balanced classes
    log_fn(f"eval {exp.name}: sampling {n} images from step {ckpt.step} ({weights} weights) with "
           f"{exp.sample.sampler}, {exp.sample_steps} steps" + (f", guidance {exp.sample.guidance:g}" if conditional
                                                                 else "") + f" on {device}")
    result = sample_images(trained, model, exp, device, labels, n)
    info = {"source": "checkpoint", "checkpoint": str(ckpt.path), "checkpoint_sha256": ckpt.sha256,
            "step": ckpt.step, "weights": weights, "dataset": trained.data.dataset, "sampler": exp.sample.sampler,
            "steps": exp.sample_steps, "eta": exp.sample.eta,
            "guidance": exp.sample.guidance if conditional else 1.0, "nfe_per_image": result.nfe,
            "seed": exp.sample.seed, "sampling_seconds": round(result.seconds, 2)}
    return result.images, result.labels, info, f"{sample_tag(ckpt.step, exp, conditional)}-n{n}"


def _from_file(exp: Experiment, samples: str, n: int) -> tuple[torch.Tensor, torch.Tensor | None, dict, str]:
    path = Path(samples)
    if not path.is_file():
        path = paths.experiment_dir(exp.name) / "samples" / (samples if samples.endswith(".safetensors")
                                                              else f"{samples}.safetensors")
    if not path.is_file():
        raise UserError(f"--samples {samples}: no such file (nor {path})")
    tensors = load_file(path)
    images, labels = tensors["images"], tensors.get("labels")
    if n and n < len(images):
        images, labels = images[:n], labels[:n] if labels is not None else None
    made = path.with_suffix(".json")
    recorded = json.loads(made.read_text()) if made.is_file() else {}
    info = {"source": "samples", "samples": str(path), "dataset": exp.data.dataset}
    for key in ("checkpoint", "checkpoint_sha256", "step", "weights", "sampler", "steps", "eta", "guidance",
                "nfe_per_image", "seed"):
        info[key] = recorded.get(key)
    return images, labels, info, f"{path.stem}-n{len(images)}"


def run_eval(exp: Experiment, n: int = 1000, fid_weights: str | None = None, samples: str | None = None,
             fid_ref_images: int = 0, log_fn=log) -> Path:
    """Sample (or read) N images, score them, write ``experiments/<exp>/eval/<tag>.json``; returns its path."""
    t0 = time.monotonic()
    device = resolve_device(exp.train.device, DistContext())
    if samples:
        images, labels, info, tag = _from_file(exp, samples, n)
    else:
        images, labels, info, tag = _from_checkpoint(exp, n, device, log_fn)
    dataset = info["dataset"]
    result = {"experiment": exp.name, "tag": tag, "n": len(images), **info}

    try:
        clf = classifier.load_classifier(dataset, device)
    except UserError:
        log_fn(f"no classifier for {dataset} yet: training it once (ddpm-hpc classifier {dataset})")
        clf = classifier.train_classifier(dataset, device=device, log_fn=log_fn)
        clf.model.to(device)
    result.update(classifier.score(clf, images, labels, dataset))

    path = fid.weights_path(fid_weights)
    result.update({"fid": None, "fid_reference_images": None})
    if not path.is_file() and not fid_weights:  # not asked for explicitly: skip FID with a one-line message
        message = f"FID skipped: no Inception-v3 weights at {path}: {fid.HOW_TO_GET}"
        log_fn(message)
        result["fid_note"] = message
    else:
        net = fid.load_inception(path, device)
        log_fn(f"computing FID of {len(images)} images against the {dataset} training split on {device}")
        result.update(fid.fid(net, images, dataset, fid_ref_images))

    result.update({"eval_seconds": round(time.monotonic() - t0, 1), "device": str(device),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    out = paths.experiment_dir(exp.name) / "eval" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
    acc = result["conditional_accuracy"]
    log_fn(f"wrote {out}: conditional accuracy {'n/a' if acc is None else f'{acc:.2%}'}, classifier FD "
           f"{result.get('classifier_fd')}, FID {result['fid'] if result['fid'] is not None else 'skipped'}, "
           f"{result.get('nfe_per_image')} NFE per image")
    return out
