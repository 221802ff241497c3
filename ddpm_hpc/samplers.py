"""Samplers: each is one short function over a denoiser callable ``fn(x, t_in_0_1) -> prediction``.

DDPM-family samplers take an epsilon-predictor and the schedule; flow samplers take a velocity field. All start
from the given noise ``x`` so that a fixed seed gives comparable grids, and all return (x0, trajectory) where the
trajectory holds a few intermediate states (x_T first) when ``keep`` > 0.
"""

from __future__ import annotations

from typing import Callable

import torch

from .schedules import NoiseSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _time(x, value: float) -> torch.Tensor:
    return torch.full((x.shape[0],), value, device=x.device, dtype=torch.float32)


def _snapshots(total: int, keep: int) -> set[int]:
    if keep <= 0:
        return set()
    return {round(i * (total - 1) / max(keep - 1, 1)) for i in range(keep)}


def ddpm_ancestral(fn: Denoiser, x, schedule: NoiseSchedule, *, generator=None, keep: int = 0, progress=None, **_):
    """Algorithm 2: x_{t-1} = 1/sqrt(a_t) (x_t - b_t/sqrt(1 - a_bar_t) eps) + sigma_t z, for t = T..1."""
    s, T = schedule, schedule.T
    trajectory, marks = [x], _snapshots(T + 1, keep)
    for i, t in enumerate(range(T, 0, -1)):
        eps = fn(x, _time(x, t / T))
        mean = (x - s.betas[t] / s.sqrt_one_minus_alpha_bars[t] * eps) / s.alphas[t].sqrt()
        z = torch.randn(x.shape, generator=generator, device=x.device) if t > 1 else 0.0
        x = mean + s.sigmas[t] * z
        if i + 1 in marks:
            trajectory.append(x)
        if progress:
            progress(i + 1, T)
    return x, trajectory[:keep] if keep else []


def ddim(fn: Denoiser, x, schedule: NoiseSchedule, *, steps: int, eta: float = 0.0, generator=None, keep: int = 0,
         progress=None, **_):
    """Song et al. (2021) on ``steps`` evenly spaced timesteps, eta in [0, 1]. eta=0 is deterministic; eta=1 with all
    T steps is DDPM with sigma_t^2 = beta-tilde_t (the posterior variance), whereas ``ddpm_ancestral`` uses beta_t."""
    s, T = schedule, schedule.T
    times = torch.linspace(T, 0, steps + 1).round().long().tolist()
    trajectory, marks = [x], _snapshots(steps + 1, keep)
    for i, (t, prev) in enumerate(zip(times[:-1], times[1:])):
        eps = fn(x, _time(x, t / T))
        ab_t, ab_prev = s.alpha_bars[t], s.alpha_bars[prev]
        mab_t, mab_prev = s.one_minus_alpha_bars[t], s.one_minus_alpha_bars[prev]  # 1 - ab, kept precise
        x0 = (x - mab_t.sqrt() * eps) / ab_t.sqrt()
        sigma = eta * (mab_prev / mab_t * (1 - ab_t / ab_prev)).sqrt()
        direction = (mab_prev - sigma**2).clamp(min=0).sqrt() * eps  # >= 0 for eta <= 1; clamp: rounding only
        x = ab_prev.sqrt() * x0 + direction
        if eta > 0 and prev > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device)
        if i + 1 in marks:
            trajectory.append(x)
        if progress:
            progress(i + 1, steps)
    return x, trajectory[:keep] if keep else []


def flow_euler(fn: Denoiser, x, schedule=None, *, steps: int, keep: int = 0, progress=None, **_):
    """Euler integration of dx/dt = v(x, t) from t=0 (noise) to t=1 (data)."""
    trajectory, marks, h = [x], _snapshots(steps + 1, keep), 1.0 / steps
    for i in range(steps):
        x = x + h * fn(x, _time(x, i * h))
        if i + 1 in marks:
            trajectory.append(x)
        if progress:
            progress(i + 1, steps)
    return x, trajectory[:keep] if keep else []


def flow_heun(fn: Denoiser, x, schedule=None, *, steps: int, keep: int = 0, progress=None, **_):
    """Heun's second-order method (2 evaluations per step, the last step Euler as in EDM): NFE = 2*steps - 1."""
    trajectory, marks, h = [x], _snapshots(steps + 1, keep), 1.0 / steps
    for i in range(steps):
        t = i * h
        v = fn(x, _time(x, t))
        x_euler = x + h * v
        x = x_euler if i == steps - 1 else x + 0.5 * h * (v + fn(x_euler, _time(x, t + h)))
        if i + 1 in marks:
            trajectory.append(x)
        if progress:
            progress(i + 1, steps)
    return x, trajectory[:keep] if keep else []


SAMPLERS = {"ddpm": ddpm_ancestral, "ddim": ddim, "euler": flow_euler, "heun": flow_heun}


def network_evaluations(sampler: str, steps: int, guidance: float) -> int:
    """Network evaluations per image: what the time on a GPU scales with (guidance doubles the batch)."""
    nfe = 2 * steps - 1 if sampler == "heun" else steps
    return nfe * (2 if guidance != 1.0 else 1)


def guided(net, labels, guidance: float, num_classes: int) -> Denoiser:
    """Wrap ``net`` into a denoiser of (x, t). With guidance w != 1 (classifier-free guidance, Ho & Salimans),
    pred = uncond + w (cond - uncond); both passes run as one doubled batch."""
    if labels is None or guidance == 1.0:
        return lambda x, t: net(x, t, labels)
    null = torch.full_like(labels, num_classes)

    def fn(x, t):
        both = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    return fn
