"""Time grids: where a few-step sampler evaluates the network.

``uniform`` is evenly spaced in the model's time (what the samplers always did). ``edm`` is the grid of Karras et al.
(2022, "Elucidating the design space", eq. 5): noise levels sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) -
smax^(1/rho)))^rho for i < N, then 0, which puts the steps where the noise is low and errors show most (rho = 7 in
EDM; rho = 1 is uniform in sigma). sigma is the noise-to-signal ratio of x_t = alpha x0 + sigma' z, sigma'/alpha:

- DDPM (discrete t = 1..T): sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), from sigma_T down to sigma_1, each level
  taken at the nearest timestep the network was trained on (kept strictly decreasing), then t = 0;
- flow matching (x_t = (1 - t) z + t x0): sigma = (1 - t) / t, so t = 1 / (1 + sigma). Divided by t, the straight
  path is exactly EDM's x0 + sigma z, so EDM's grid carries over (Meta's flow_matching image example samples on it
  too). The grid starts at t = 0 (pure noise, sigma = inf) instead of EDM's sigma_max = 80 (t = 0.012), which would
  spend one evaluation on almost no change, and ends at t = 1.

``shift`` is the uniform grid with every noise level multiplied by ``shift``: sigma_i = shift * sigma(u_i) for the
uniform points u_i. For flow matching that is t = u / (u + shift (1 - u)), the "shifted" timesteps of Esser et al.
(2024, Stable Diffusion 3, their s): shift > 1 moves steps towards the noise, where a few-step solver of a flow model
errs most (measured on MNIST, docs/quality.md); shift = 1 is uniform. For DDPM each shifted level is taken at the
nearest trained timestep, as for ``edm``.
"""

from __future__ import annotations

import math

import torch

from ..schedules import NoiseSchedule

GRIDS = ("uniform", "edm", "shift")
FLOW_SIGMA_MIN, FLOW_SIGMA_MAX = 0.002, 80.0  # EDM's defaults


def edm_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """N = ``steps`` rho-spaced noise levels from sigma_max down to sigma_min, then 0 (N + 1 values)."""
    if steps == 1:
        return [sigma_max, 0.0]
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)] + [0.0]


def ddpm_times(schedule: NoiseSchedule, steps: int, grid: str = "uniform", rho: float = 7.0,
               shift: float = 1.0) -> list[int]:
    """``steps`` + 1 integer timesteps from T down to 0."""
    T = schedule.T
    uniform = torch.linspace(T, 0, steps + 1).round().long().tolist()
    if grid == "uniform":
        return uniform
    log_sigma = 0.5 * (schedule.one_minus_alpha_bars[1:].double().log() - schedule.alpha_bars[1:].double().log())
    if grid == "edm":
        wanted = edm_sigmas(steps, math.exp(log_sigma[0]), math.exp(log_sigma[-1]), rho)[:-1]
    elif grid == "shift":
        wanted = [shift * math.exp(log_sigma[t - 1]) for t in uniform[:-1]]
    else:
        raise ValueError(f"unknown time grid {grid!r}")
    times = [T]
    for i, sigma in enumerate(wanted[1:], start=1):
        nearest = int((log_sigma - math.log(sigma)).abs().argmin()) + 1
        times.append(max(min(nearest, times[-1] - 1), steps - i))  # strictly decreasing, room left for the rest
    return times + [0]


def flow_times(steps: int, grid: str = "uniform", rho: float = 7.0, shift: float = 1.0) -> list[float]:
    """``steps`` + 1 times from 0 (noise) to 1 (data)."""
    if grid in ("uniform", "shift"):
        h = 1.0 / steps
        uniform = [i * h for i in range(steps)] + [1.0]  # i * h: as the samplers always computed it; ends at 1 exactly
        if grid == "uniform":
            return uniform
        return [u / (u + shift * (1 - u)) for u in uniform]  # sigma = (1 - t) / t becomes shift * (1 - u) / u
    if grid != "edm":
        raise ValueError(f"unknown time grid {grid!r}")
    sigmas = edm_sigmas(steps, FLOW_SIGMA_MIN, FLOW_SIGMA_MAX, rho)
    return [0.0] + [1.0 / (1.0 + s) for s in sigmas[1:]]
