"""Samplers of velocity (flow-matching) networks: the ODE dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data)."""

from __future__ import annotations

from .common import Denoiser, snapshots, time_tensor
from .grids import flow_times
from .multistep import multistep_2m


def flow_euler(fn: Denoiser, x, schedule=None, *, steps: int, keep: int = 0, progress=None,
               time_grid: str = "uniform", rho: float = 7.0, **_):
    """Euler integration over the time grid (grids.py)."""
    times = flow_times(steps, time_grid, rho)
    trajectory, marks = [x], snapshots(steps + 1, keep)
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        x = x + (t_next - t) * fn(x, time_tensor(x, t))
        if i + 1 in marks:
            trajectory.append(x)
        if progress:
            progress(i + 1, steps)
    return x, trajectory[:keep] if keep else []


def flow_heun(fn: Denoiser, x, schedule=None, *, steps: int, keep: int = 0, progress=None,
              time_grid: str = "uniform", rho: float = 7.0, **_):
    """Heun's second-order method (2 evaluations per step, the last step Euler as in EDM): NFE = 2*steps - 1."""
    times = flow_times(steps, time_grid, rho)
    trajectory, marks = [x], snapshots(steps + 1, keep)
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        h = t_next - t
        v = fn(x, time_tensor(x, t))
        x_euler = x + h * v
        x = x_euler if i == steps - 1 else x + 0.5 * h * (v + fn(x_euler, time_tensor(x, t_next)))
        if i + 1 in marks:
            trajectory.append(x)
        if progress:
            progress(i + 1, steps)
    return x, trajectory[:keep] if keep else []


def flow_dpmpp2m(fn: Denoiser, x, schedule=None, *, steps: int, keep: int = 0, progress=None,
                 time_grid: str = "uniform", rho: float = 7.0, **_):
    """DPM-Solver++(2M) (multistep.py) on the straight path: alpha_t = t, sigma_t = 1 - t, x0 estimate
    x + (1 - t) v. One evaluation per step; its first-order version is exactly Euler."""
    times = flow_times(steps, time_grid, rho)

    def predict_x0(x, i):
        return x + (1 - times[i]) * fn(x, time_tensor(x, times[i]))

    return multistep_2m(predict_x0, x, times, [1 - t for t in times], keep=keep, progress=progress)
