"""Noise schedules against the closed-form DDPM formulas (Ho et al. 2020), computed independently in float64.

Conventions checked here (see ddpm_hpc/schedules.py): arrays of length T+1 indexed by t = 1..T; the linear betas
follow the practical's formula beta_t = beta1 + (beta2 - beta1) t / T (so beta_T = beta2); and, unlike the
practical's cumulative sum that starts at index 0, alpha_bar_t = prod_{s=1..t} (1 - beta_s) as in the paper.
"""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_hpc.config import build_experiment
from ddpm_hpc.errors import ConfigError
from ddpm_hpc.objectives import DDPMObjective
from ddpm_hpc.schedules import cosine_schedule, linear_schedule, make_schedule, schedule_for




def reference_linear(T: int, beta1: float, beta2: float) -> tuple[list[float], list[float]]:
    """betas[t] and alpha_bar[t] for t = 0..T in float64 with a plain loop (index 0: clean data)."""
    betas = [beta1 + (beta2 - beta1) * t / T for t in range(T + 1)]
    alpha_bars = [1.0]
    for t in range(1, T + 1):
        alpha_bars.append(alpha_bars[-1] * (1.0 - betas[t]))
    return betas, alpha_bars


def reference_cosine_alpha_bar(T: int, s: float = 0.008) -> list[float]:
    """Nichol & Dhariwal (2021), eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi / 2)."""
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    return [v / f[0] for v in f]


@pytest.mark.parametrize("T,beta1,beta2", [(400, 1e-4, 0.02), (1000, 1e-4, 0.02), (50, 1e-3, 0.05)])
def test_linear_betas_and_alpha_bars_match_closed_form(T, beta1, beta2):
    s = linear_schedule(T, beta1, beta2)
    betas, alpha_bars = reference_linear(T, beta1, beta2)
    assert s.T == T
    assert s.betas.shape == s.alphas.shape == s.alpha_bars.shape == (T + 1,)
    for t in range(1, T + 1):
        assert s.betas[t].item() == pytest.approx(betas[t], rel=1e-6, abs=1e-9), t
        assert s.alphas[t].item() == pytest.approx(1.0 - betas[t], rel=1e-6), t
        assert s.alpha_bars[t].item() == pytest.approx(alpha_bars[t], rel=1e-6), t
    assert s.betas[T].item() == pytest.approx(beta2, rel=1e-6)
    assert s.alpha_bars[0].item() == 1.0


def test_alpha_bar_is_the_product_from_s_equals_1():
    """Ho et al.: alpha_bar_1 = alpha_1. The practical's cumsum from index 0 would also multiply in (1 - beta_0)."""
    s = linear_schedule(400, 1e-4, 0.02)
    assert s.alpha_bars[1].item() == pytest.approx(1.0 - s.betas[1].item(), rel=1e-7)
    assert s.alpha_bars[1].item() != pytest.approx((1 - s.betas[0].item()) * (1 - s.betas[1].item()), rel=1e-7)
    ratios = s.alpha_bars[1:].double() / s.alpha_bars[:-1].double()
    torch.testing.assert_close(ratios, s.alphas[1:].double(), rtol=1e-6, atol=0)


def test_sqrt_coefficients_and_sigma():
    T = 400
    s = linear_schedule(T)
    betas, alpha_bars = reference_linear(T, 1e-4, 0.02)
    for t in (1, 2, 10, 200, 399, 400):
        assert s.sqrt_alpha_bars[t].item() == pytest.approx(math.sqrt(alpha_bars[t]), rel=1e-6)
        # 1 - alpha_bar_1 = beta_1 ~ 1.5e-4: taking it from a float32 alpha_bar would lose ~4 digits
        assert s.one_minus_alpha_bars[t].item() == pytest.approx(1 - alpha_bars[t], rel=1e-6)
        assert s.sqrt_one_minus_alpha_bars[t].item() == pytest.approx(math.sqrt(1 - alpha_bars[t]), rel=1e-6)
        # Algorithm 2 with Ho's first choice sigma_t^2 = beta_t
        assert s.sigmas[t].item() == pytest.approx(math.sqrt(betas[t]), rel=1e-6)
    total = s.sqrt_alpha_bars[1:] ** 2 + s.sqrt_one_minus_alpha_bars[1:] ** 2
    torch.testing.assert_close(total, torch.ones(T), rtol=0, atol=1e-6)


def test_cosine_schedule_matches_nichol_dhariwal():
    T = 400
    s = cosine_schedule(T)
    ref = reference_cosine_alpha_bar(T)
    assert s.alpha_bars[0].item() == 1.0
    for t in range(1, T + 1):
        beta = min(1 - ref[t] / ref[t - 1], 0.999)  # betas clipped at 0.999 (only the last step is)
        assert s.betas[t].item() == pytest.approx(beta, rel=1e-5, abs=1e-8), t
    for t in range(1, T):  # below the clipped last step, alpha_bar is exactly f(t)/f(0)
        assert s.alpha_bars[t].item() == pytest.approx(ref[t], rel=1e-5, abs=1e-8), t
    assert (s.betas[1:] <= 0.999).all() and (s.betas[1:] > 0).all()
    assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all()  # strictly decreasing
    assert s.alpha_bars[T].item() < 1e-4


def test_make_schedule_dispatch_and_device_move():
    lin = make_schedule("linear", 10, 1e-3, 0.1)
    torch.testing.assert_close(lin.betas, linear_schedule(10, 1e-3, 0.1).betas)
    cos = make_schedule("cosine", 10)
    torch.testing.assert_close(cos.alpha_bars, cosine_schedule(10).alpha_bars)
    with pytest.raises(ValueError, match="cosine schedule takes no beta"):  # would be ignored: refused
        make_schedule("cosine", 10, 1e-3, 0.1)
    with pytest.raises(ValueError, match="needs beta1 and beta2"):
        make_schedule("linear", 10)
    moved = lin.to("cpu")
    assert moved.T == 10 and torch.equal(moved.alpha_bars, lin.alpha_bars)
    with pytest.raises(ValueError):
        make_schedule("quadratic", 10, 1e-3, 0.1)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_forward_process_statistics(kind):
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps has mean sqrt(ab_t) x0 and variance 1 - ab_t (q(x_t | x0))."""
    T, n = 400, 100_000
    s = make_schedule(kind, T, *((1e-4, 0.02) if kind == "linear" else ()))
    objective = DDPMObjective(s)
    x0 = torch.tensor([-1.0, -0.3, 0.5, 1.0]).view(1, 4, 1, 1).expand(n, 4, 1, 1)
    gen = torch.Generator().manual_seed(0)
    _, ref = reference_linear(T, 1e-4, 0.02)
    ref_cos = reference_cosine_alpha_bar(T)
    for t_value in (1, 50, 200, 400):
        ab = (ref if kind == "linear" else ref_cos)[t_value]
        if kind == "cosine" and t_value == T:
            ab = s.alpha_bars[T].item()  # clipped last step
        eps = torch.randn(x0.shape, generator=gen)
        x_t = objective.noisy(x0, torch.full((n,), t_value), eps).double()
        mean, var = x_t.mean(dim=0).flatten(), x_t.var(dim=0).flatten()
        se_mean = math.sqrt((1 - ab) / n)
        expected_mean = math.sqrt(ab) * torch.tensor([-1.0, -0.3, 0.5, 1.0], dtype=torch.float64)
        assert (mean - expected_mean).abs().max().item() < 5 * se_mean + 1e-6, (kind, t_value)
        assert (var - (1 - ab)).abs().max().item() < 5 * (1 - ab) * math.sqrt(2 / n) + 1e-9, (kind, t_value)


def test_the_readme_states_the_practicals_schedule_as_the_code_computes_it():
    """README's numbers about the practical's schedule (the seed presets' T, beta1, beta2), recomputed here."""
    import re
    from pathlib import Path

    from ddpm_hpc.config import load_experiment

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    d = load_experiment("mnist_unet_10k").diffusion  # a seed preset
    s = schedule_for(d)

    def stated(pattern: str) -> float:
        found = re.search(pattern, readme)
        assert found, f"README does not state {pattern!r}"
        return float(found.group(1))

    assert (d.schedule, d.T, d.beta1, d.beta2) == ("linear", 400, 1e-4, 0.02)
    assert stated(r"with T=(\d+), ᾱ_T") == d.T
    assert stated(r"β_1 = ([\d.e-]+)") == pytest.approx(s.betas[1].item(), rel=1e-6)
    assert s.betas[1].item() != pytest.approx(d.beta1, rel=1e-3)  # beta1 is beta_0, never used
    assert stated(r"with T=400, ᾱ_T = ([\d.]+)") == pytest.approx(s.alpha_bars[-1].item(), abs=5e-5)
    assert stated(r"√ᾱ_T ≈ (\d+) %") == round(100 * s.alpha_bars[-1].sqrt().item())
    ho = make_schedule("linear", 1000, d.beta1, d.beta2)
    assert stated(r"T=1000 reaches ᾱ_T = ([\d.e-]+)") == pytest.approx(ho.alpha_bars[-1].item(), rel=0.01)


def test_a_cosine_experiment_refuses_betas_it_would_ignore():
    """diffusion.beta1/beta2 set only the linear schedule: with schedule: cosine they are a config error naming
    them, and the defaults (what every stored config carries) are accepted."""
    cosine = {"diffusion": {"schedule": "cosine", "T": 50}}
    assert schedule_for(build_experiment("c", cosine, "c.yaml").diffusion).T == 50
    with pytest.raises(ConfigError, match=r"diffusion.beta2=0.05 would be ignored.*cosine"):
        build_experiment("c", {"diffusion": {**cosine["diffusion"], "beta2": 0.05}}, "c.yaml")
