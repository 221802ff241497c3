"""Samplers against their formulas: DDPM ancestral (Ho et al., Algorithm 2), DDIM (Song et al.), flow Euler/Heun,
classifier-free guidance, network-evaluation counts and conditional grids of any size."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_hpc.config import build_experiment
from ddpm_hpc.models import build_model
from ddpm_hpc.samplers import guided, network_evaluations, solve
from ddpm_hpc.sampling import grid_labels, sample_images
from ddpm_hpc.schedules import cosine_schedule, linear_schedule




def reference(T: int, beta1: float, beta2: float):
    """float64 betas, alphas, alpha_bars for t = 0..T (index 0: clean data), by a plain loop."""
    betas = [beta1 + (beta2 - beta1) * t / T for t in range(T + 1)]
    ab = [1.0]
    for t in range(1, T + 1):
        ab.append(ab[-1] * (1 - betas[t]))
    return betas, [1 - b for b in betas], ab


def smooth_eps(x, t):
    """A deterministic, non-trivial stand-in for an epsilon network."""
    return torch.tanh(x) * (0.5 + t.view(-1, *[1] * (x.dim() - 1)))


def step_of(t_in: torch.Tensor, T: int) -> int:
    steps = (t_in * T).round().long().unique()
    assert len(steps) == 1
    return int(steps)


class ZeroNoise:
    """Patch torch.randn inside the samplers so that only their deterministic parts (the means) remain."""

    def __enter__(self):
        self.original = torch.randn
        torch.randn = lambda shape, *a, **k: torch.zeros(shape, device=k.get("device"))
        return self

    def __exit__(self, *exc):
        torch.randn = self.original


def test_ancestral_mean_is_hos_formula():
    T = 20
    s = linear_schedule(T, 1e-3, 0.2)
    betas, alphas, ab = reference(T, 1e-3, 0.2)
    x = torch.randn((3, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    with ZeroNoise():
        _, traj = solve("ddpm", smooth_eps, x, s, keep=T + 1)
    assert len(traj) == T + 1 and torch.equal(traj[0], x)
    for i, t in enumerate(range(T, 0, -1)):
        x_t = traj[i].double()
        eps = smooth_eps(traj[i], torch.full((3,), t / T)).double()
        mean = (x_t - betas[t] / math.sqrt(1 - ab[t]) * eps) / math.sqrt(alphas[t])  # Algorithm 2, line 4
        torch.testing.assert_close(traj[i + 1].double(), mean, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_eta1_all_steps_has_the_ancestral_mean(schedule):
    """With eta=1 and all T steps DDIM's update is the ancestral one: same mean (its variance is tested below)."""
    T = 30
    s = linear_schedule(T, 1e-3, 0.1) if schedule == "linear" else cosine_schedule(T)
    x = torch.randn((4, 3, 4, 4), generator=torch.Generator().manual_seed(1))
    with ZeroNoise():
        out_ddpm, traj_ddpm = solve("ddpm", smooth_eps, x, s, keep=T + 1)
        out_ddim, traj_ddim = solve("ddim", smooth_eps, x, s, steps=T, eta=1.0, keep=T + 1)
    assert len(traj_ddpm) == len(traj_ddim) == T + 1
    for a, b in zip(traj_ddpm, traj_ddim):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_ddpm, out_ddim, rtol=1e-4, atol=1e-4)
    # and it is not trivially so: DDIM with eta=0 takes a different path
    with ZeroNoise():
        out_eta0, _ = solve("ddim", smooth_eps, x, s, steps=T, eta=0.0)
    assert (out_eta0 - out_ddpm).abs().max() > 1e-2


def ancestral_posterior_variance(fn, x, T, betas, ab, generator):
    """Ho et al.'s ancestral sampler with sigma_t^2 = beta_tilde_t (their second choice), written from the posterior
    q(x_{t-1} | x_t, x0) (eq. 7) with x0 predicted from eps, in float64; noise drawn as the samplers draw it."""
    for t in range(T, 0, -1):
        eps = fn(x, torch.full((x.shape[0],), t / T)).double()
        x0 = (x.double() - math.sqrt(1 - ab[t]) * eps) / math.sqrt(ab[t])
        mean = (math.sqrt(ab[t - 1]) * betas[t] / (1 - ab[t]) * x0
                + math.sqrt(1 - betas[t]) * (1 - ab[t - 1]) / (1 - ab[t]) * x.double())
        beta_tilde = (1 - ab[t - 1]) / (1 - ab[t]) * betas[t]
        z = torch.randn(x.shape, generator=generator).double() if t > 1 else 0.0
        x = (mean + math.sqrt(beta_tilde) * z).float()
    return x


def test_ddim_eta1_all_steps_is_the_ancestral_sampler_with_the_posterior_variance():
    """sample.eta=1 with all T steps is DDPM with sigma_t^2 = beta_tilde_t (not the ddpm sampler's beta_t): given the
    same noise, the same images."""
    T = 25
    s = linear_schedule(T, 1e-3, 0.2)
    betas, _, ab = reference(T, 1e-3, 0.2)
    x = torch.randn((4, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    out_ddim, _ = solve("ddim", smooth_eps, x, s, steps=T, eta=1.0, generator=torch.Generator().manual_seed(8))
    expected = ancestral_posterior_variance(smooth_eps, x, T, betas, ab, torch.Generator().manual_seed(8))
    torch.testing.assert_close(out_ddim, expected, rtol=1e-4, atol=1e-4)
    out_ddpm, _ = solve("ddpm", smooth_eps, x, s, generator=torch.Generator().manual_seed(8))
    assert (out_ddpm - expected).abs().max() > 1e-2  # the ddpm sampler (sigma_t^2 = beta_t) is another one


def residual_stats(run, T, betas, alphas, ab, n):
    """Run a sampler on n scalar 'images' from one x_T; per step t, the mean and variance of the residual
    x_{t-1} - mu(x_t, t), with mu Ho's mean 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - ab_t) eps) in float64."""
    x = torch.randn((n, 1, 1, 1), generator=torch.Generator().manual_seed(2))
    _, traj = run(x)
    assert len(traj) == T + 1
    out = {}
    for i, t in enumerate(range(T, 0, -1)):
        eps = smooth_eps(traj[i], torch.full((n,), t / T)).double()
        mu = (traj[i].double() - betas[t] / math.sqrt(1 - ab[t]) * eps) / math.sqrt(alphas[t])
        r = traj[i + 1].double() - mu
        out[t] = r.var().item(), r.mean().item()
    return out


def test_step_variances_ancestral_beta_ddim_eta1_posterior():
    """Ho's sampler adds sigma_t^2 = beta_t; DDIM with eta=1 adds the posterior variance
    beta_tilde_t = (1 - ab_{t-1}) / (1 - ab_t) beta_t; neither adds noise on the last step (t = 1)."""
    T, n = 8, 20_000
    s = linear_schedule(T, 1e-2, 0.3)
    betas, alphas, ab = reference(T, 1e-2, 0.3)
    tol = 5 * math.sqrt(2 / n)  # five relative standard errors of a sample variance
    gen = torch.Generator().manual_seed(3)
    ancestral = residual_stats(lambda x: solve("ddpm", smooth_eps, x, s, generator=gen, keep=T + 1),
                               T, betas, alphas, ab, n)
    ddim_eta1 = residual_stats(lambda x: solve("ddim", smooth_eps, x, s, steps=T, eta=1.0, generator=gen, keep=T + 1),
                               T, betas, alphas, ab, n)
    for t in range(2, T + 1):
        beta_tilde = (1 - ab[t - 1]) / (1 - ab[t]) * betas[t]
        assert beta_tilde < 0.9 * betas[t]  # the two really differ at these t
        var, mean = ancestral[t]
        assert abs(var / betas[t] - 1) < tol, (t, var, betas[t])
        assert abs(mean) < 5 * math.sqrt(betas[t] / n) + 1e-6
        var, mean = ddim_eta1[t]
        assert abs(var / beta_tilde - 1) < tol, (t, var, beta_tilde)
        assert abs(mean) < 5 * math.sqrt(beta_tilde / n) + 1e-6
    assert ancestral[1][0] < 1e-10 and ddim_eta1[1][0] < 1e-10


def x0_oracle(x0: torch.Tensor, s, T: int):
    """The perfect epsilon-predictor for a known x0: eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""

    def fn(x, t_in):
        t = step_of(t_in, T)
        return (x - s.sqrt_alpha_bars[t] * x0) / s.sqrt_one_minus_alpha_bars[t]

    return fn


def known_image(n=4):
    return torch.rand((n, 3, 8, 8), generator=torch.Generator().manual_seed(5)) * 2 - 1


@pytest.mark.parametrize("steps", [400, 50, 7, 1])
def test_ddim_eta0_with_a_perfect_oracle_recovers_x0(steps):
    T = 400
    s = linear_schedule(T)
    x0 = known_image()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(6))
    x_T = s.sqrt_alpha_bars[T] * x0 + s.sqrt_one_minus_alpha_bars[T] * noise
    out, _ = solve("ddim", x0_oracle(x0, s, T), x_T, s, steps=steps, eta=0.0)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim_eta1"])
def test_stochastic_samplers_with_a_perfect_oracle_recover_x0(sampler):
    T = 400
    s = linear_schedule(T)
    x0 = known_image()
    gen = torch.Generator().manual_seed(7)
    x_T = s.sqrt_alpha_bars[T] * x0 + s.sqrt_one_minus_alpha_bars[T] * torch.randn(x0.shape, generator=gen)
    if sampler == "ddpm":
        out, traj = solve("ddpm", x0_oracle(x0, s, T), x_T, s, generator=gen, keep=5)
    else:
        out, traj = solve("ddim", x0_oracle(x0, s, T), x_T, s, steps=T, eta=1.0, generator=gen, keep=5)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-3)
    assert len(traj) == 5 and torch.equal(traj[0], x_T) and torch.equal(traj[-1], out)


def straight_path_velocity(x0: torch.Tensor):
    """The exact velocity field of the straight path towards x0: v(x, t) = (x0 - x) / (1 - t) (= x0 - z on it)."""

    def fn(x, t):
        assert (t < 1).all()  # never evaluated at t = 1, where the field is singular
        return (x0 - x) / (1 - t.view(-1, 1, 1, 1))

    return fn


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 3, 20])
def test_flow_samplers_with_the_exact_velocity_recover_the_data_point(sampler, steps):
    x0 = known_image()
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(8))
    calls = []

    def fn(x, t):
        calls.append(t[0].item())
        return straight_path_velocity(x0)(x, t)

    out, traj = solve(sampler, fn, z, steps=steps, keep=2)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)
    assert torch.equal(traj[0], z) and torch.equal(traj[-1], out)
    assert len(calls) == network_evaluations(sampler, steps, 1.0)
    assert calls[0] == 0.0 and max(calls) < 1


def test_flow_heun_is_second_order_where_euler_is_first():
    """dx/dt = -x (velocity depends on x) from t = 0 to 1: exact x(1) = x(0) e^-1."""
    x = torch.ones(1, 1, 1, 1)
    err = {}
    for name in ("euler", "heun"):
        for steps in (10, 20):
            out, _ = solve(name, lambda x, t: -x, x.double(), steps=steps)
            err[name, steps] = abs(out.item() - math.exp(-1))
    assert 1.7 < err["euler", 10] / err["euler", 20] < 2.3
    assert err["heun", 20] < err["euler", 20] / 5


@pytest.mark.parametrize("sampler,steps,nfe", [("ddpm", 400, 400), ("ddim", 50, 50), ("euler", 10, 10),
                                               ("heun", 10, 19)])
def test_network_evaluations_count_calls(sampler, steps, nfe):
    T = 400
    s = linear_schedule(T)
    count = {"rows": 0}

    def net(x, t, labels):
        count["rows"] += x.shape[0]
        return torch.zeros_like(x)

    n = 3
    x = torch.randn(n, 3, 4, 4)
    labels = torch.tensor([1, 2, 3])
    for w in (1.0, 3.0):
        count["rows"] = 0
        solve(sampler, guided(net, labels, w, 10), x, s, steps=steps, eta=0.0)
        assert network_evaluations(sampler, steps, w) == nfe * (1 if w == 1.0 else 2)
        assert count["rows"] == n * network_evaluations(sampler, steps, w)  # per image


def test_every_sampler_is_a_loop_of_its_steps_and_solve_keeps_the_trajectory():
    """The samplers are bare loops yielding x after each update; ``solve`` (through ``trace``) adds the trajectory
    and progress for all of them alike, and an unknown name is an error, not a default."""
    s = linear_schedule(40)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    for sampler, steps in (("ddpm", 40), ("ddim", 5), ("dpmpp2m", 5), ("euler", 5), ("heun", 5),
                           ("flow_dpmpp2m", 5)):
        seen = []
        out, traj = solve(sampler, smooth_eps, x, s, steps=steps, keep=3, generator=torch.Generator(),
                          progress=lambda i, total: seen.append((i, total)))
        assert seen == [(i, steps) for i in range(1, steps + 1)], sampler
        assert len(traj) == 3 and torch.equal(traj[0], x) and torch.equal(traj[-1], out), sampler
    with pytest.raises(ValueError, match="unknown sampler 'plms'"):
        solve("plms", smooth_eps, x, s, steps=5)


def test_guidance_w1_is_the_conditional_call_and_w_batches_both_passes():
    calls = []

    def net(x, t, labels):
        calls.append((x.shape[0], None if labels is None else labels.clone()))
        return x * (1 + t.view(-1, 1, 1, 1)) + (0 if labels is None else labels.view(-1, 1, 1, 1).float())

    x, t, labels = torch.randn(3, 3, 4, 4), torch.full((3,), 0.3), torch.tensor([0, 4, 9])
    torch.testing.assert_close(guided(net, labels, 1.0, 10)(x, t), net(x, t, labels))
    calls.clear()
    guided(net, labels, 1.0, 10)(x, t)
    assert len(calls) == 1 and calls[0][0] == 3 and torch.equal(calls[0][1], labels)

    calls.clear()
    out = guided(net, labels, 2.5, 10)(x, t)
    assert len(calls) == 1 and calls[0][0] == 6  # one doubled batch, not two calls
    assert torch.equal(calls[0][1], torch.tensor([0, 4, 9, 10, 10, 10]))  # conditional, then the null class
    cond, uncond = net(x, t, labels), net(x, t, torch.full_like(labels, 10))
    torch.testing.assert_close(out, uncond + 2.5 * (cond - uncond))

    calls.clear()
    torch.testing.assert_close(guided(net, None, 2.5, 10)(x, t), net(x, t, None))  # unconditional: no guidance


def conditional_experiment(**sample):
    return build_experiment("grid", {
        "data": {"dataset": "digits"},
        "model": {"arch": "unet", "channels": [8, 16], "conditioning": "embedding", "time_embedding": True,
                  "norm": "group"},
        "diffusion": {"objective": "flow"},
        "train": {"label_dropout": 0.1},
        "sample": {"sampler": "euler", "steps": 2, "guidance": 2.0, "batch_size": 16, **sample},
    }, "test")


def test_grid_labels_for_more_than_ten_samples():
    exp = conditional_experiment(per_class=3)
    labels, n, nrow = grid_labels(exp, torch.device("cpu"))
    assert n == 30 and nrow == 3
    assert labels.tolist() == [c for c in range(10) for _ in range(3)]  # one row of the grid per class
    unconditional = build_experiment("u", {"model": {"arch": "conv"}, "sample": {"n": 16}}, "test")
    labels, n, nrow = grid_labels(unconditional, torch.device("cpu"))
    assert labels is None and n == 16 and nrow == 4


def test_guided_sampling_with_labels_for_n_greater_than_10():
    """The practical's torch.arange(n_sample) breaks above 10 classes; grids of any size must work, in batches."""
    exp = conditional_experiment(per_class=3)
    torch.manual_seed(0)
    model = build_model(exp.model, 10).eval()
    seen = []

    def spy(x, t, labels):
        seen.append(labels.clone())
        return model(x, t, labels)

    labels, n, _ = grid_labels(exp, torch.device("cpu"))
    result = sample_images(exp, spy, torch.device("cpu"), labels, n, keep=3)
    assert result.images.shape == (30, 3, 32, 32) and result.images.dtype == torch.uint8
    assert torch.equal(result.labels, labels)
    assert result.nfe == 2 * 2  # two Euler steps, doubled by guidance
    # batches of 16 images (32 rows with the null class), every conditional label exactly as in the grid
    conditional = torch.cat([s[:len(s) // 2] for s in seen[::2]])
    assert torch.equal(conditional, labels) and all((s[len(s) // 2:] == 10).all() for s in seen)
    assert len(result.trajectory) == 3 and result.trajectory[0].shape == (8, 3, 32, 32)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_sampling_runs_the_network_under_the_autocast_of_its_precision(precision, dtype):
    """Sampling picks its autocast dtype by the training rule (the callers pass the resolved train.precision)."""
    exp = conditional_experiment(per_class=1)
    torch.manual_seed(0)
    model = build_model(exp.model, 10).eval()
    seen = []

    def spy(x, t, labels):
        out = model(x, t, labels)
        seen.append(out.dtype)
        return out

    labels, n, _ = grid_labels(exp, torch.device("cpu"))
    result = sample_images(exp, spy, torch.device("cpu"), labels, n, precision=precision)
    assert set(seen) == {dtype} and result.images.dtype == torch.uint8
