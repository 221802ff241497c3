"""Classifier-free guidance (Ho & Salimans 2022) around a network ``net(x, t, labels)``, optionally limited to an
interval of noise levels and with a weight that changes over time.

The noise level is sigma, the noise-to-signal ratio of x_t (grids.py): sqrt((1 - a_bar_t) / a_bar_t) for DDPM,
(1 - t) / t for flow matching; the same for both objectives, so an interval means the same images in either.
Kynkäänniemi et al. (2024, "Applying guidance in a limited interval improves sample and distribution quality")
guide only for sigma in (lo, hi]: at high noise guidance pulls every sample of a class towards the same few shapes
(less variety), at low noise it barely changes anything. Outside the interval the update is the plain conditional one
and costs one evaluation instead of two.

The weight w may change with progress p from noise (0) to data (1): ``constant`` w; ``linear`` 1 + 2 (w - 1) p and
``cosine`` 1 + (w - 1)(1 - cos(pi p)), both growing from unguided at the start and averaging w over p (the
increasing schedules of Wang et al. 2024, "Analysis of classifier-free guidance weight schedulers").
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..schedules import NoiseSchedule
from .common import Denoiser

GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")
NoiseLevels = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def noise_levels(objective: str, schedule: NoiseSchedule | None) -> NoiseLevels:
    """The model's time t (per row) -> (sigma, progress p in [0, 1] from noise to data)."""
    if objective == "flow":
        return lambda t: ((1 - t) / t, t)
    T = schedule.T
    ratio = (schedule.one_minus_alpha_bars.double() / schedule.alpha_bars.double()).sqrt().float()
    return lambda t: (ratio.to(t.device)[(t * T).round().long()], 1 - t)


def guidance_weight(w: float, progress: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "constant":
        return torch.full_like(progress, w)
    if kind == "linear":
        return 1 + 2 * (w - 1) * progress
    if kind == "cosine":
        return 1 + (w - 1) * (1 - torch.cos(math.pi * progress))
    raise ValueError(f"unknown guidance schedule {kind!r}")


def guided(net, labels, guidance: float, num_classes: int, *, interval: tuple[float, float] | None = None,
           schedule: str = "constant", levels: NoiseLevels | None = None) -> Denoiser:
    """Wrap ``net`` into a denoiser of (x, t). With guidance w != 1, pred = uncond + w (cond - uncond), both branches
    in one doubled batch (one forward pass; the models sample in eval mode, so no row sees another's statistics).
    ``interval`` and a non-constant ``schedule`` need ``levels`` (``noise_levels``)."""
    if labels is None or guidance == 1.0:
        return lambda x, t: net(x, t, labels)
    null = torch.full_like(labels, num_classes)

    def branches(x, t):
        return net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)

    if interval is None and schedule == "constant":
        def fn(x, t):
            cond, uncond = branches(x, t)
            return uncond + guidance * (cond - uncond)
        return fn

    def varying(x, t):
        sigma, progress = levels(t)
        w = guidance_weight(guidance, progress.float(), schedule)
        if interval is not None:
            w = torch.where((sigma > interval[0]) & (sigma <= interval[1]), w, torch.ones_like(w))
        if bool((w == 1).all()):
            return net(x, t, labels)  # exactly the unguided update, one evaluation
        cond, uncond = branches(x, t)
        w = w.to(cond.dtype).view(-1, *[1] * (x.dim() - 1))
        return torch.where(w == 1, cond, uncond + w * (cond - uncond))
    return varying
