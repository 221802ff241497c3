"""Samplers: each is one short function over a denoiser callable ``fn(x, t_in_0_1) -> prediction``.

DDPM-family samplers (ddpm.py) take an epsilon-predictor and the schedule; flow samplers (flow.py) take a velocity
field. All start from the given noise ``x`` so that a fixed seed gives comparable grids, and all return (x0,
trajectory) where the trajectory holds a few intermediate states (x_T first) when ``keep`` > 0. They call the
network only through ``fn`` (guidance.guided wraps it), so counting its rows counts the evaluations. Few-step
samplers take a ``time_grid`` (grids.py); dpmpp2m and flow_dpmpp2m share one second-order multistep solver
(multistep.py).
"""

from __future__ import annotations

from .common import Denoiser
from .ddpm import ddim, ddpm_ancestral, dpmpp2m
from .flow import flow_dpmpp2m, flow_euler, flow_heun
from .grids import GRIDS, ddpm_times, flow_times
from .guidance import GUIDANCE_SCHEDULES, guided, noise_levels

SAMPLERS = {"ddpm": ddpm_ancestral, "ddim": ddim, "dpmpp2m": dpmpp2m,
            "euler": flow_euler, "heun": flow_heun, "flow_dpmpp2m": flow_dpmpp2m}
FLOW_SAMPLERS = ("euler", "heun", "flow_dpmpp2m")


def network_evaluations(sampler: str, steps: int, guidance: float) -> int:
    """Network evaluations per image with constant guidance over all steps (guidance doubles the batch); a guidance
    interval skips the unconditional branch outside it, which only counting (sampling.CountingNet) sees."""
    nfe = 2 * steps - 1 if sampler == "heun" else steps
    return nfe * (2 if guidance != 1.0 else 1)


__all__ = ["Denoiser", "FLOW_SAMPLERS", "GRIDS", "GUIDANCE_SCHEDULES", "SAMPLERS", "ddim", "ddpm_ancestral",
           "ddpm_times", "dpmpp2m", "flow_dpmpp2m", "flow_euler", "flow_heun", "flow_times", "guided",
           "network_evaluations", "noise_levels"]
