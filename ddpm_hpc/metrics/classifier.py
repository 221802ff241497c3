"""The toolkit's own small CNN classifier for labelled datasets, used to score samples.

``ddpm-hpc classifier <dataset>`` trains it and writes ``checkpoints/_classifiers/<dataset>.safetensors`` (tensors
only, nothing pickled) and ``<dataset>.json`` (architecture, training settings, held-out accuracy and the SHA-256 of
the weights file, checked on every load); an existing classifier is replaced only with ``--force``, since eval results
record its SHA-256. It gives two numbers for generated images:

- **conditional accuracy**: the fraction of samples drawn for class k that the classifier calls k;
- **classifier FD**: the Fréchet distance between Gaussians fitted to its penultimate (128-d) features of the samples
  and of the real training set. This is *not* FID: another network, another feature space, other values. It is
  comparable only with other classifier FDs of the same classifier file (same SHA-256) and the same N.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from .. import paths
from ..checkpoint import atomic_write
from ..data import to_model_range
from ..errors import UserError
from ..logging_utils import log
from .floor import NOTE, FeatureSetup, class_counts, eval_setup, floor_distance, layout_name, ratio, \
    real_splits
from .frechet import gaussian_stats

ARCH = "smallcnn-v1"
FEATURE_DIM = 128
# per dataset: (steps, base width, convolutions per block); small enough to train on a laptop CPU for digits/MNIST
DEFAULTS = {"digits": (600, 16, 1), "mnist": (1500, 32, 1), "cifar10": (6000, 32, 2)}


class SmallCNN(nn.Module):
    """Three blocks of ``depth`` conv-BN-ReLU layers and a 2x2 max pool (width, 2 width, 4 width channels at 32, 16
    and 8 px), a 2x2 average pool, then 128 features (the penultimate layer), then the classes."""

    def __init__(self, num_classes: int = 10, width: int = 32, depth: int = 1, in_channels: int = 3):
        super().__init__()
        w = [width, 2 * width, 4 * width]

        def block(cin, cout):
            layers = []
            for i in range(depth):
                layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                           nn.ReLU()]
            return nn.Sequential(*layers, nn.MaxPool2d(2))

        self.body = nn.Sequential(block(in_channels, w[0]), block(w[0], w[1]), block(w[1], w[2]),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Linear(4 * w[2], FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Penultimate features of uint8 N x 3 x 32 x 32 images."""
        return self.body(to_model_range(x_uint8))

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x_uint8)))


@dataclass
class Classifier:
    model: SmallCNN
    info: dict  # the JSON next to the weights
    sha256: str
    path: Path


def classifier_dir() -> Path:
    return paths.checkpoints_root() / "_classifiers"


def weights_path(dataset: str) -> Path:
    return classifier_dir() / f"{dataset}.safetensors"


def _split(dataset: str, seed: int, root=None):
    """(train images, train labels, held-out images, held-out labels); digits: floor.DIGITS_HELDOUT of them held out."""
    return real_splits(dataset, root, seed)


def _augment(x: torch.Tensor, g: torch.Generator, flip: bool, shift: int = 2) -> torch.Tensor:
    """Random translations of up to ``shift`` px (zero padding), and horizontal flips for natural images."""
    n = len(x)
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    if flip:
        mirror = torch.rand(n, generator=g) < 0.5
        out[mirror] = out[mirror].flip(-1)
    return out


@torch.inference_mode()
def predict(model: SmallCNN, images_uint8: torch.Tensor, batch_size: int = 500,
            setup: FeatureSetup | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, penultimate features) of uint8 images, in float32 on the CPU (computed in ``setup``'s precision)."""
    model.eval()
    device = next(model.parameters()).device
    setup = setup or eval_setup(device)
    logits, feats = [], []
    for start in range(0, len(images_uint8), batch_size):
        with setup.autocast():
            f = model.features(images_uint8[start:start + batch_size].to(device))
            out = model.head(f)
        feats.append(f.float().cpu())
        logits.append(out.float().cpu())
    return torch.cat(logits), torch.cat(feats)


def accuracy(model: SmallCNN, images_uint8: torch.Tensor, labels: torch.Tensor) -> float:
    logits, _ = predict(model, images_uint8)
    return float((logits.argmax(1) == labels.cpu()).float().mean())


def train_classifier(dataset: str, steps: int | None = None, batch_size: int = 64, width: int | None = None,
                     depth: int | None = None, lr: float = 2e-3,
                     seed: int = 0, device: str | torch.device = "cpu", root=None, log_fn=log,
                     out: Path | None = None, force: bool = False) -> Classifier:
    """Train on the dataset's training split (digits: all but a held-out 20 %), measure held-out accuracy, save.
    An existing classifier is replaced only with ``force``: classifier FDs of different weights do not compare."""
    out = out or weights_path(dataset)
    if out.exists() and not force:
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        raise UserError(f"{out} exists (SHA-256 {digest[:12]}): classifier FDs of a retrained classifier would not "
                        f"compare with those computed with it; pass --force to replace it")
    d_steps, d_width, d_depth = DEFAULTS[dataset]
    steps, width, depth = d_steps if steps is None else steps, width or d_width, depth or d_depth
    device = torch.device(device)
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = _split(dataset, seed, root)
    model = SmallCNN(10, width, depth).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed + 1)
    log_fn(f"training the {ARCH} classifier (width {width}, depth {depth}) on {dataset}: {len(ytr)} images, "
           f"{steps} steps of {batch_size} on {device}")
    t0, model = time.monotonic(), model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(ytr), (batch_size,), generator=g)
        x = _augment(xtr[idx], g, flip=dataset == "cifar10").to(device)
        loss = F.cross_entropy(model(x), ytr[idx].to(device), label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 10) == 0 or step == steps:
            log_fn(f"classifier step {step}/{steps}: loss {loss.item():.4f} ({time.monotonic() - t0:.0f} s)")
    acc = accuracy(model, xte, yte)
    log_fn(f"classifier held-out accuracy on {dataset}: {acc:.4f} ({len(yte)} images)")
    info = {"arch": ARCH, "width": width, "depth": depth, "feature_dim": FEATURE_DIM, "num_classes": 10,
            "dataset": dataset,
            "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "train_images": len(ytr),
            "heldout": "20% of digits, fixed by seed" if dataset == "digits" else "test split",
            "heldout_images": len(yte), "heldout_accuracy": round(acc, 5), "seconds": round(time.monotonic() - t0, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return save_classifier(model, info, out)


def save_classifier(model: SmallCNN, info: dict, path: Path) -> Classifier:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save_bytes(tensors, metadata={"arch": ARCH, "dataset": info["dataset"]})
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(path, data)
    info = {**info, "weights": path.name, "sha256": digest}
    atomic_write(path.with_suffix(".json"), (json.dumps(info, indent=1) + "\n").encode())
    for pattern in (f"{path.stem}-ref-*.safetensors", f"{path.stem}-floor-*.json"):  # cached stats of older weights
        for stale in path.parent.glob(pattern):
            if digest[:12] not in stale.name:
                stale.unlink(missing_ok=True)
    return Classifier(model.eval(), info, digest, path)


def load_classifier(dataset: str, device: str | torch.device = "cpu", path: Path | None = None) -> Classifier:
    """Read the weights, check their SHA-256 against the JSON written with them, rebuild the network."""
    path = Path(path) if path else weights_path(dataset)
    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise UserError(f"no classifier for {dataset} in {path.parent}: train it once with "
                        f"`ddpm-hpc classifier {dataset}`")
    if not meta_path.is_file():
        raise UserError(f"classifier {path} has no {meta_path.name} to check it against: retrain it with "
                        f"`ddpm-hpc classifier {dataset} --force`")
    info = json.loads(meta_path.read_text())
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.get("sha256") or info.get("arch") != ARCH:
        raise UserError(f"classifier {path} does not match {meta_path.name} (SHA-256 or architecture): retrain it "
                        f"with `ddpm-hpc classifier {dataset} --force`")
    model = SmallCNN(info["num_classes"], info["width"], info["depth"])
    model.load_state_dict(load_bytes(data))
    return Classifier(model.to(device).eval(), info, digest, path)


def _cache_stem(clf: Classifier, setup: FeatureSetup, kind: str) -> str:
    """What changes the classifier's features: its weights (SHA-256), the device type and the precision."""
    return f"{clf.path.stem}-{kind}-{clf.sha256[:12]}-{setup.key}"


def reference_stats(clf: Classifier, dataset: str, root=None,
                    setup: FeatureSetup | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Feature mean and covariance of the reference split (floor.real_splits), cached next to the classifier under a
    name holding its hash, the device type and the precision."""
    setup = setup or eval_setup(next(clf.model.parameters()).device)
    cache = clf.path.with_name(_cache_stem(clf, setup, "ref") + ".safetensors")
    if cache.is_file():
        from safetensors.torch import load_file
        t = load_file(cache)
        return t["mu"].numpy(), t["sigma"].numpy(), int(t["n"].item())
    images = real_splits(dataset, root)[0]
    _, feats = predict(clf.model, images, setup=setup)
    mu, sigma = gaussian_stats(feats)
    atomic_write(cache, save_bytes({"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma),
                                    "n": torch.tensor(len(images))},
                                   metadata={"classifier_sha256": clf.sha256, "setup": setup.key}))
    return mu, sigma, len(images)


def score(clf: Classifier, images_uint8: torch.Tensor, labels: torch.Tensor | None, dataset: str,
          root=None, setup: FeatureSetup | None = None) -> dict:
    """Conditional accuracy (when labels are given), predicted-class histogram, classifier FD of samples and its
    real-data floor at the same N and class counts (floor.py)."""
    from .frechet import frechet_distance

    setup = setup or eval_setup(next(clf.model.parameters()).device)
    logits, feats = predict(clf.model, images_uint8, setup=setup)
    pred = logits.argmax(1)
    out = {"classifier": {"file": str(clf.path), "sha256": clf.sha256, "arch": ARCH,
                          "heldout_accuracy": clf.info.get("heldout_accuracy")},
           "conditional_accuracy": None if labels is None else round(float((pred == labels.cpu()).float().mean()), 5),
           "predicted_class_counts": torch.bincount(pred, minlength=clf.info["num_classes"]).tolist()}
    if len(feats) >= 2:
        mu_r, sigma_r, n_ref = reference_stats(clf, dataset, root, setup)
        mu, sigma = gaussian_stats(feats)
        fd = frechet_distance(mu, sigma, mu_r, sigma_r)
        out["classifier_fd"] = round(fd, 5) if math.isfinite(fd) else None
        out["classifier_fd_reference_images"] = n_ref
        counts = class_counts(labels, clf.info["num_classes"])
        cache = clf.path.with_name(_cache_stem(clf, setup, "floor") +
                                   f"-{layout_name(len(feats), counts)}.json")
        floor, why = floor_distance(dataset, len(feats), counts, lambda x: predict(clf.model, x, setup=setup)[1],
                                    (mu_r, sigma_r), cache, root)
        out.update({"classifier_fd_floor": floor, "classifier_fd_ratio": ratio(out["classifier_fd"], floor),
                    "floor_images": len(feats), "floor_class_counts": counts,
                    "floor_note": f"no floor: {why}" if floor is None else NOTE})
    out["classifier_note"] = ("classifier FD: Fréchet distance in this toolkit's own classifier's 128-d feature "
                              "space; NOT comparable to published FID, only to other classifier FDs with the same "
                              "classifier SHA-256 and the same number of samples")
    out["feature_setup"] = setup.key
    return out
