"""Noise schedules of the DDPM forward process (Ho et al. 2020), precomputed once.

Arrays have length T+1 and are indexed by t = 1..T, as in the practical. Index 0 stands for clean data
(alpha_bar_0 = 1). The practical's text writes alpha_t where Ho et al. mean alpha-bar_t and folds beta at index 0
into its cumulative product; here alpha_bar_t = prod_{s=1..t} alpha_s exactly as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import DiffusionConfig


@dataclass(frozen=True)
class NoiseSchedule:
    betas: torch.Tensor  # beta_t, t = 0..T (beta_0 is never used as a step)
    alphas: torch.Tensor  # alpha_t = 1 - beta_t
    alpha_bars: torch.Tensor  # prod_{s=1..t} alpha_s, alpha_bar_0 = 1
    # 1 - alpha_bar_t, computed in float64: in float32, 1 - alpha_bar_1 = beta_1 ~ 1e-4 keeps only ~3 digits.
    one_minus_alpha_bars: torch.Tensor | None = None

    def __post_init__(self):
        if self.one_minus_alpha_bars is None:
            object.__setattr__(self, "one_minus_alpha_bars", 1 - self.alpha_bars)

    @property
    def T(self) -> int:
        return len(self.betas) - 1

    # Coefficients of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    @property
    def sqrt_alpha_bars(self) -> torch.Tensor:
        return self.alpha_bars.sqrt()

    @property
    def sqrt_one_minus_alpha_bars(self) -> torch.Tensor:
        return self.one_minus_alpha_bars.sqrt()

    # Algorithm 2: x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) + sigma_t z
    @property
    def sigmas(self) -> torch.Tensor:
        """sigma_t^2 = beta_t (Ho et al.'s first choice, as the practical uses)."""
        return self.betas.sqrt()

    def to(self, device) -> "NoiseSchedule":
        return NoiseSchedule(self.betas.to(device), self.alphas.to(device), self.alpha_bars.to(device),
                             self.one_minus_alpha_bars.to(device))


def _from_betas(betas: torch.Tensor) -> NoiseSchedule:
    # Everything in float64, rounded to float32 once at the end: T=1000 products in float32 drift in the last
    # digits, and 1 - alpha_bar_t for small t cancels catastrophically in float32.
    betas = betas.double()
    alphas = 1 - betas
    alpha_bars = torch.ones_like(betas)
    alpha_bars[1:] = torch.cumprod(alphas[1:], dim=0)
    return NoiseSchedule(betas=betas.float(), alphas=alphas.float(), alpha_bars=alpha_bars.float(),
                         one_minus_alpha_bars=(1 - alpha_bars).float())


def linear_schedule(T: int = 400, beta1: float = 1e-4, beta2: float = 0.02) -> NoiseSchedule:
    """The practical's schedule: beta_t = beta1 + (beta2 - beta1) t / T for t = 0..T."""
    t = torch.arange(0, T + 1, dtype=torch.float64)
    return _from_betas(beta1 + (beta2 - beta1) * t / T)


def cosine_schedule(T: int = 400, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal (2021): alpha_bar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2), betas clipped."""
    t = torch.arange(0, T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = torch.zeros(T + 1, dtype=torch.float64)
    betas[1:] = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
    return _from_betas(betas)


def make_schedule(kind: str, T: int, beta1: float | None = None, beta2: float | None = None) -> NoiseSchedule:
    """``linear`` from beta1 to beta2 (both needed); ``cosine`` has no betas to set, so passing them is an error
    rather than silently ignored."""
    if kind == "linear":
        if beta1 is None or beta2 is None:
            raise ValueError("the linear schedule needs beta1 and beta2")
        return linear_schedule(T, beta1, beta2)
    if kind == "cosine":
        if beta1 is not None or beta2 is not None:
            raise ValueError("the cosine schedule takes no beta1/beta2 (they set the linear schedule only)")
        return cosine_schedule(T)
    raise ValueError(f"unknown schedule {kind!r}")


def schedule_for(diffusion: "DiffusionConfig") -> NoiseSchedule:
    """The schedule a validated ``diffusion:`` section describes (its betas apply to the linear schedule only)."""
    betas = (diffusion.beta1, diffusion.beta2) if diffusion.schedule == "linear" else ()
    return make_schedule(diffusion.schedule, diffusion.T, *betas)
