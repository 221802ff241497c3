"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: fast solver for guided sampling", Algorithm 2): a second-order
multistep solver of the probability-flow ODE with one network evaluation per step, in the data-prediction form.

For any Gaussian path x_t = alpha_t x0 + sigma_t z, with lambda = log(alpha / sigma), h = lambda_{i+1} - lambda_i and
the network's estimate D_i of x0 at x_i:

    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (alpha_{i+1} - alpha_i sigma_{i+1} / sigma_i) D,
    D = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},  r = (lambda_i - lambda_{i-1}) / h

The linear part is integrated exactly, and D extrapolates the estimate linearly in lambda from the previous step.
With D = D_i this is DDIM (and, for flow's straight path, Euler). The first step, a step from pure noise
(alpha = 0) and the step to clean data (sigma = 0, h infinite) use D = D_i, as the paper and k-diffusion do.
DDPM (epsilon-prediction) and flow matching (velocity) differ only in how D is read off the network and in their
alpha, sigma: ``ddpm.dpmpp2m`` and ``flow.flow_dpmpp2m``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch


def multistep_2m(predict_x0: Callable[[torch.Tensor, int], torch.Tensor], x, alphas: list[float],
                 sigmas: list[float]) -> Iterator[torch.Tensor]:
    """Integrate from grid point 0 to the last, yielding x at each; ``predict_x0(x, i)`` is the network's x0
    estimate at point i."""
    previous = None  # (D_{i-1}, lambda_{i-1}) while the last point had a finite lambda
    for i in range(len(alphas) - 1):
        a, s, a_next, s_next = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        d = predict_x0(x, i)
        lam = math.log(a / s) if a > 0 and s > 0 else None
        estimate = d
        if previous is not None and lam is not None and s_next > 0:
            r = (lam - previous[1]) / (math.log(a_next / s_next) - lam)
            estimate = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * previous[0]
        x = (s_next / s) * x + (a_next - a * s_next / s) * estimate
        previous = (d, lam) if lam is not None else None
        yield x
