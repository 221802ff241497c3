"""Samplers of velocity (flow-matching) networks: the ODE dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data), over
the times ``times`` (grids.flow_times). Each is the bare update loop: it yields x after every step."""

from __future__ import annotations

from typing import Iterator

import torch

from .common import Denoiser, time_tensor
from .multistep import multistep_2m


def flow_euler(fn: Denoiser, x, times: list[float]) -> Iterator[torch.Tensor]:
    """Euler: one evaluation per step."""
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * fn(x, time_tensor(x, t))
        yield x


def flow_heun(fn: Denoiser, x, times: list[float]) -> Iterator[torch.Tensor]:
    """Heun's second-order method (2 evaluations per step, the last step Euler as in EDM): NFE = 2*steps - 1."""
    last = len(times) - 2
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        h = t_next - t
        v = fn(x, time_tensor(x, t))
        x_euler = x + h * v
        x = x_euler if i == last else x + 0.5 * h * (v + fn(x_euler, time_tensor(x, t_next)))
        yield x


def flow_dpmpp2m(fn: Denoiser, x, times: list[float]) -> Iterator[torch.Tensor]:
    """DPM-Solver++(2M) (multistep.py) on the straight path: alpha_t = t, sigma_t = 1 - t, x0 estimate
    x + (1 - t) v. One evaluation per step; its first-order version is exactly Euler."""
    def predict_x0(x, i):
        return x + (1 - times[i]) * fn(x, time_tensor(x, times[i]))

    return multistep_2m(predict_x0, x, times, [1 - t for t in times])
