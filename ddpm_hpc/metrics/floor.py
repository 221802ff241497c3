"""The real-data floor of a Fréchet distance, and how cached feature statistics are keyed.

A Fréchet distance of N samples is never 0, even for perfect samples: N real images drawn from the data
distribution have a distance of their own to the reference statistics, which shrinks as N grows. So every distance
an eval reports comes with its **floor**: the same distance (same feature network, same reference statistics, same
precision) for N *real held-out* images with the samples' class counts, and the ratio of the two
(``classifier_fd_ratio``, ``fid_ratio``; 1.0 means "as close as real data at this N").

The two sides never overlap:

- the **reference** is the training split (MNIST, CIFAR-10) or, for the embedded digits that have no test split, the
  80 % that :data:`DIGITS_HELDOUT` leaves (a fixed permutation, seed 0);
- the **floor images** are taken from the test split (digits: the held-out 20 %): for class c, the first k_c images of
  class c in a fixed permutation (seed 0), k_c being the number of samples drawn for class c; for unconditional
  samples, the first N of the permutation. Where the held-out split has too few images of a class, the floor is
  None and the note says so.

Floors and reference statistics are cached (``_classifiers/``, ``_fid/`` under the checkpoint root) under names that
hold everything that changes their value: the dataset, N, the class layout, the feature network (its weights' hash),
and the device type and precision the features were computed with (:class:`FeatureSetup`), so statistics computed
with fp32 on a CPU are never reused for an eval on a GPU in another precision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import atomic_write
from ..data import load_dataset
from .frechet import frechet_distance, gaussian_stats

DIGITS_HELDOUT = 0.2  # digits has no test split: this fraction (a fixed permutation) is held out
SPLIT_SEED = 0
NOTE = ("floor: the same distance for N real held-out images (test split; digits: a held-out 20 %) with the samples' "
        "class counts, against the same reference; ratio = distance / floor (1 = as close as real data at this N)")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class FeatureSetup:
    """Where and in which precision feature networks run: part of every cached statistic's name."""
    device: torch.device
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)

    @property
    def key(self) -> str:
        return f"{self.device.type}-{self.precision}"

    def autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


def eval_setup(device: torch.device) -> FeatureSetup:
    """The setup eval computes features with: fp32 on every device, so that a metric does not change with the GPU
    generation (the key still holds the device type: cuDNN and the CPU kernels round differently)."""
    return FeatureSetup(torch.device(device), "fp32")


def real_splits(dataset: str, root=None, seed: int = SPLIT_SEED):
    """(reference images, reference labels, held-out images, held-out labels): disjoint real images."""
    train = load_dataset(dataset, root, train=True)
    if dataset == "digits":
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        k = int(round(len(train) * DIGITS_HELDOUT))
        held, rest = perm[:k], perm[k:]
        return train.images[rest], train.labels[rest], train.images[held], train.labels[held]
    test = load_dataset(dataset, root, train=False)
    return train.images, train.labels, test.images, test.labels


def class_counts(labels: torch.Tensor | None, classes: int) -> list[int] | None:
    return None if labels is None else torch.bincount(labels.cpu().long(), minlength=classes).tolist()


def layout_name(n: int, counts: list[int] | None) -> str:
    """A file-name-safe name of N and the class layout: ``n100-uncond``, ``n100-10x10``, ``n25-c3f9a1b2``."""
    if counts is None:
        return f"n{n}-uncond"
    if len(set(counts)) == 1:
        return f"n{n}-{counts[0]}x{len(counts)}"
    return f"n{n}-c{hashlib.sha256(json.dumps(counts).encode()).hexdigest()[:8]}"


def floor_indices(heldout_labels: torch.Tensor, n: int, counts: list[int] | None) -> tuple[torch.Tensor | None, str]:
    """Indices into the held-out split with the given class counts (or the first n), or (None, why not)."""
    perm = torch.randperm(len(heldout_labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    if counts is None:
        if n > len(perm):
            return None, f"the held-out split has {len(perm)} images, fewer than N={n}"
        return perm[:n], ""
    shuffled = heldout_labels[perm]
    picked = []
    for c, k in enumerate(counts):
        members = perm[shuffled == c]
        if k > len(members):
            return None, f"the held-out split has {len(members)} images of class {c}, the samples {k}"
        picked.append(members[:k])
    return torch.cat(picked), ""


def floor_distance(dataset: str, n: int, counts: list[int] | None, features: Callable[[torch.Tensor], np.ndarray],
                   reference: tuple[np.ndarray, np.ndarray], cache: Path, root=None) -> tuple[float | None, str]:
    """The distance of N real held-out images (``counts`` per class) to ``reference``, cached in ``cache`` (JSON).
    Returns (floor or None, why it is None)."""
    if cache.is_file():
        try:
            data = json.loads(cache.read_text())
            return data["floor"], data.get("why", "")
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is computed again
    _, _, held_images, held_labels = real_splits(dataset, root)
    idx, why = floor_indices(held_labels, n, counts)
    value = None
    if idx is not None and len(idx) >= 2:
        mu, sigma = gaussian_stats(features(held_images[idx]))
        d = frechet_distance(mu, sigma, *reference)
        value = round(d, 6) if math.isfinite(d) else None
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, (json.dumps({"dataset": dataset, "n": n, "class_counts": counts, "floor": value,
                                     "why": why}) + "\n").encode())
    return value, why


def ratio(distance: float | None, floor: float | None) -> float | None:
    if distance is None or not floor:
        return None
    return round(distance / floor, 4)
