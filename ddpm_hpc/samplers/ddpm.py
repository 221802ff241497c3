"""Samplers of epsilon-predicting (DDPM-trained) networks over a discrete schedule t = 1..T. Each is the bare update
loop: it yields x after every step (common.trace keeps the trajectory and reports progress)."""

from __future__ import annotations

from typing import Iterator

import torch

from ..schedules import NoiseSchedule
from .common import Denoiser, time_tensor
from .multistep import multistep_2m


def ddpm_ancestral(fn: Denoiser, x, schedule: NoiseSchedule, generator=None) -> Iterator[torch.Tensor]:
    """Algorithm 2: x_{t-1} = 1/sqrt(a_t) (x_t - b_t/sqrt(1 - a_bar_t) eps) + sigma_t z, for t = T..1."""
    s, T = schedule, schedule.T
    for t in range(T, 0, -1):
        eps = fn(x, time_tensor(x, t / T))
        mean = (x - s.betas[t] / s.sqrt_one_minus_alpha_bars[t] * eps) / s.alphas[t].sqrt()
        z = torch.randn(x.shape, generator=generator, device=x.device) if t > 1 else 0.0
        x = mean + s.sigmas[t] * z
        yield x


def ddim(fn: Denoiser, x, schedule: NoiseSchedule, times: list[int], eta: float = 0.0,
         generator=None) -> Iterator[torch.Tensor]:
    """Song et al. (2021) over the integer timesteps ``times`` (T down to 0, grids.ddpm_times), eta in [0, 1]. eta=0
    is deterministic; eta=1 with all T steps is DDPM with sigma_t^2 = beta-tilde_t (the posterior variance), whereas
    ``ddpm_ancestral`` uses beta_t."""
    s, T = schedule, schedule.T
    for t, prev in zip(times[:-1], times[1:]):
        eps = fn(x, time_tensor(x, t / T))
        ab_t, ab_prev = s.alpha_bars[t], s.alpha_bars[prev]
        mab_t, mab_prev = s.one_minus_alpha_bars[t], s.one_minus_alpha_bars[prev]  # 1 - ab, kept precise
        x0 = (x - mab_t.sqrt() * eps) / ab_t.sqrt()
        sigma = eta * (mab_prev / mab_t * (1 - ab_t / ab_prev)).sqrt()
        direction = (mab_prev - sigma**2).clamp(min=0).sqrt() * eps  # >= 0 for eta <= 1; clamp: rounding only
        x = ab_prev.sqrt() * x0 + direction
        if eta > 0 and prev > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device)
        yield x


def dpmpp2m(fn: Denoiser, x, schedule: NoiseSchedule, times: list[int]) -> Iterator[torch.Tensor]:
    """DPM-Solver++(2M) (multistep.py) with alpha_t = sqrt(a_bar_t), sigma_t = sqrt(1 - a_bar_t) and the x0 estimate
    (x - sigma_t eps) / alpha_t: one evaluation per step, second order."""
    T = schedule.T
    alphas = [float(schedule.alpha_bars[t].double().sqrt()) for t in times]
    sigmas = [float(schedule.one_minus_alpha_bars[t].double().sqrt()) for t in times]

    def predict_x0(x, i):
        eps = fn(x, time_tensor(x, times[i] / T))
        return (x - sigmas[i] * eps) / alphas[i]

    return multistep_2m(predict_x0, x, alphas, sigmas)
