"""Samplers: each is the bare update loop of one method over a denoiser callable ``fn(x, t_in_0_1) -> prediction``,
with only the arguments it uses, yielding x after every step. ``solve`` picks the loop for a sampler name, gives it
its time grid, and runs it through ``common.trace`` (trajectory snapshots and progress, the same for all).

DDPM-family samplers (ddpm.py) take an epsilon-predictor, the schedule and integer timesteps; flow samplers
(flow.py) take a velocity field and times in [0, 1]. All start from the given noise ``x`` so that a fixed seed gives
comparable grids. They call the network only through ``fn`` (guidance.guided wraps it), so counting its rows counts
the evaluations. dpmpp2m and flow_dpmpp2m share one second-order multistep solver (multistep.py); the time grids are
in grids.py.
"""

from __future__ import annotations

import torch

from ..schedules import NoiseSchedule
from .common import Denoiser, Progress, trace
from .ddpm import ddim, ddpm_ancestral, dpmpp2m
from .flow import flow_dpmpp2m, flow_euler, flow_heun
from .grids import GRIDS, ddpm_times, flow_times
from .guidance import GUIDANCE_SCHEDULES, guided, noise_levels

DDPM_SAMPLERS = ("ddpm", "ddim", "dpmpp2m")
FLOW_SAMPLERS = ("euler", "heun", "flow_dpmpp2m")
SAMPLERS = DDPM_SAMPLERS + FLOW_SAMPLERS


def solve(sampler: str, fn: Denoiser, x: torch.Tensor, schedule: NoiseSchedule | None = None, *, steps: int = 0,
          eta: float = 0.0, generator: torch.Generator | None = None, time_grid: str = "uniform", rho: float = 7.0,
          shift: float = 1.0, keep: int = 0,
          progress: Progress | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``sampler`` from the noise ``x``: (x0, trajectory of ``keep`` states, x_T first). ``schedule`` is needed
    by the DDPM samplers only; ``ddpm`` takes all T steps, the others ``steps`` steps of ``time_grid``; ``eta`` is
    DDIM's, ``generator`` draws the noise of the stochastic ones (ddpm, ddim with eta > 0); ``rho`` is the edm grid's
    and ``shift`` the shift grid's (grids.py)."""
    if sampler == "ddpm":
        return trace(ddpm_ancestral(fn, x, schedule, generator), x, schedule.T, keep=keep, progress=progress)
    if sampler in FLOW_SAMPLERS:
        loop = {"euler": flow_euler, "heun": flow_heun, "flow_dpmpp2m": flow_dpmpp2m}[sampler]
        return trace(loop(fn, x, flow_times(steps, time_grid, rho, shift)), x, steps, keep=keep, progress=progress)
    if sampler == "ddim":
        loop = ddim(fn, x, schedule, ddpm_times(schedule, steps, time_grid, rho, shift), eta, generator)
    elif sampler == "dpmpp2m":
        loop = dpmpp2m(fn, x, schedule, ddpm_times(schedule, steps, time_grid, rho, shift))
    else:
        raise ValueError(f"unknown sampler {sampler!r}; one of {', '.join(SAMPLERS)}")
    return trace(loop, x, steps, keep=keep, progress=progress)


def network_evaluations(sampler: str, steps: int, guidance: float) -> int:
    """Network evaluations per image with constant guidance over all steps (guidance doubles the batch); a guidance
    interval skips the unconditional branch outside it, which only counting (sampling.CountingNet) sees."""
    nfe = 2 * steps - 1 if sampler == "heun" else steps
    return nfe * (2 if guidance != 1.0 else 1)


__all__ = ["DDPM_SAMPLERS", "Denoiser", "FLOW_SAMPLERS", "GRIDS", "GUIDANCE_SCHEDULES", "SAMPLERS", "ddim",
           "ddpm_ancestral", "ddpm_times", "dpmpp2m", "flow_dpmpp2m", "flow_euler", "flow_heun", "flow_times",
           "guided", "network_evaluations", "noise_levels", "solve", "trace"]
