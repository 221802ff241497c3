"""Few-step sampling (docs/quality.md): DPM-Solver++(2M) for DDPM and flow models against the closed-form
probability-flow ODE of Gaussian data, EDM time grids, guidance on an interval and over time, the batched guidance
pass against two separate passes, and the sample settings' validation and names."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_hpc.config import build_experiment
from ddpm_hpc.errors import ConfigError
from ddpm_hpc.models import build_model
from ddpm_hpc.samplers import ddpm_times, flow_times, guided, noise_levels, solve
from ddpm_hpc.samplers.grids import edm_sigmas
from ddpm_hpc.samplers.guidance import guidance_weight
from ddpm_hpc.sampling import sample_images, sample_tag
from ddpm_hpc.schedules import linear_schedule

MU, C = 0.7, 0.4  # data: x0 ~ N(MU, C^2) in every coordinate


def gaussian_denoiser(x, alpha, sigma):
    """E[x0 | x_t] for x_t = alpha x0 + sigma z: linear in x, so the ODE has a closed form."""
    return MU + alpha * C**2 / (alpha**2 * C**2 + sigma**2) * (x - alpha * MU)


def exact_ode(x_start, a0, s0, a1, s1):
    """The probability-flow ODE keeps u = (x - alpha MU) / sqrt(alpha^2 C^2 + sigma^2) constant."""
    u = (x_start - a0 * MU) / math.sqrt(a0**2 * C**2 + s0**2)
    return a1 * MU + math.sqrt(a1**2 * C**2 + s1**2) * u


def ddpm_eps(schedule):
    T = schedule.T

    def eps(x, t):
        i = int(round(t[0].item() * T))
        a, s = schedule.alpha_bars[i].double().sqrt().item(), schedule.one_minus_alpha_bars[i].double().sqrt().item()
        return (x - a * gaussian_denoiser(x, a, s)) / s
    return eps


def flow_velocity(x, t):
    t = t[0].item()
    d = gaussian_denoiser(x, t, 1 - t)
    return d - (x - t * d) / (1 - t)  # E[x0 - z | x_t]


def test_dpmpp2m_is_second_order_on_the_ddpm_ode():
    """From t = T to t = 500 (of 1000) with 10, 20, 40 uniform steps: the error falls ~4x per halving (DDIM, its
    first-order version, ~2x), against the ODE's closed form."""
    s = linear_schedule(1000)
    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    errors = {}
    for name in ("dpmpp2m", "ddim"):
        for steps in (10, 20, 40):
            _, traj = solve(name, ddpm_eps(s), x, s, steps=steps, keep=steps + 1)
            times = ddpm_times(s, steps)
            i = times.index(500)
            a = lambda t: s.alpha_bars[t].double().sqrt().item()  # noqa: E731
            sd = lambda t: s.one_minus_alpha_bars[t].double().sqrt().item()  # noqa: E731
            exact = exact_ode(x, a(1000), sd(1000), a(500), sd(500))
            errors[name, steps] = (traj[i] - exact).abs().max().item()
    for coarse, fine in ((10, 20), (20, 40)):
        assert 3.0 < errors["dpmpp2m", coarse] / errors["dpmpp2m", fine] < 5.0, errors
        assert 1.7 < errors["ddim", coarse] / errors["ddim", fine] < 2.3, errors
    assert errors["dpmpp2m", 40] < errors["ddim", 40] / 5


def test_flow_dpmpp2m_is_second_order_and_its_first_step_is_euler():
    """From t = 0 (noise) to t = 0.5 with 10, 20, 40 uniform steps: the error falls ~4x per halving."""
    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    errors = {}
    for steps in (10, 20, 40):
        _, traj = solve("flow_dpmpp2m", flow_velocity, x, steps=steps, keep=steps + 1)
        errors[steps] = (traj[steps // 2] - exact_ode(x, 0.0, 1.0, 0.5, 0.5)).abs().max().item()
    assert 3.0 < errors[10] / errors[20] < 5.0 and 3.0 < errors[20] / errors[40] < 5.0, errors
    one, _ = solve("flow_dpmpp2m", flow_velocity, x, steps=1)
    euler, _ = solve("euler", flow_velocity, x, steps=1)
    torch.testing.assert_close(one, euler)


@pytest.mark.parametrize("grid", ["uniform", "edm"])
def test_2m_solvers_are_exact_for_one_data_point(grid):
    """With all data at MU the x0 estimate is constant and the exponential integrator is exact in any number of steps
    (Euler on flow's straight path is too; the ddpm ODE is not straight, so only the 2M solver lands on it)."""
    s = linear_schedule(400)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    T = s.T

    def eps(x, t):
        i = int(round(t[0].item() * T))
        return (x - s.alpha_bars[i].sqrt() * MU) / s.one_minus_alpha_bars[i].sqrt()

    out, _ = solve("dpmpp2m", eps, x, s, steps=4, time_grid=grid)
    torch.testing.assert_close(out, torch.full_like(x, MU), rtol=0, atol=1e-4)
    out, _ = solve("flow_dpmpp2m", lambda x, t: (MU - x) / (1 - t.view(-1, 1, 1, 1)), x, steps=3, time_grid=grid)
    torch.testing.assert_close(out, torch.full_like(x, MU), rtol=0, atol=1e-5)


def test_edm_grids():
    sig = edm_sigmas(5, 0.002, 80.0, 7.0)
    assert sig[0] == pytest.approx(80.0) and sig[-2] == pytest.approx(0.002) and sig[-1] == 0.0
    assert edm_sigmas(5, 0.5, 2.5, 1.0)[:-1] == pytest.approx([2.5, 2.0, 1.5, 1.0, 0.5])  # rho = 1: uniform in sigma
    times = flow_times(5, "edm")
    assert times[0] == 0.0 and times[-1] == 1.0 and all(a < b for a, b in zip(times, times[1:]))
    assert times[1:-1] == pytest.approx([1 / (1 + s) for s in sig[1:-1]])
    assert flow_times(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    s = linear_schedule(400)
    ts = ddpm_times(s, 8, "edm")
    assert ts[0] == 400 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:])) and len(ts) == 9
    assert ddpm_times(s, 400, "edm") == list(range(400, -1, -1))  # as many steps as T: every timestep
    # each level is the trained timestep nearest to the wanted sigma (in log sigma)
    log_sigma = 0.5 * (s.one_minus_alpha_bars.double().log() - s.alpha_bars.double().log())
    wanted = edm_sigmas(8, log_sigma[1].exp().item(), log_sigma[400].exp().item(), 7.0)
    for t, w in zip(ts[1:-1], wanted[1:-1]):
        assert abs(log_sigma[t] - math.log(w)) <= min(abs(log_sigma[t + d] - math.log(w)) for d in (-1, 1)) + 1e-12
    assert ts != ddpm_times(s, 8)  # and not the uniform grid


@pytest.mark.parametrize("shift", [0.5, 2.0, 3.0])
def test_the_shift_grid_multiplies_every_noise_level_by_the_shift(shift):
    """Flow: sigma = (1 - t) / t of each shifted time is shift x that of the uniform time (SD3's shifted timesteps),
    with the endpoints 0 and 1 kept; shift = 1 is the uniform grid. DDPM: each level shift x sigma of the uniform
    timestep, taken at the nearest trained timestep, strictly decreasing, from T to 0."""
    uniform, shifted = flow_times(8), flow_times(8, "shift", shift=shift)
    assert shifted[0] == 0.0 and shifted[-1] == 1.0 and shifted != uniform
    for u, t in zip(uniform[1:-1], shifted[1:-1]):
        assert (1 - t) / t == pytest.approx(shift * (1 - u) / u, rel=1e-12)
    assert flow_times(8, "shift", shift=1.0) == pytest.approx(uniform, abs=1e-15)
    s = linear_schedule(1000)
    sigma = ((1 - s.alpha_bars) / s.alpha_bars).sqrt().double()
    ts = ddpm_times(s, 10, "shift", shift=shift)
    assert ts[0] == 1000 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    for previous, t, u in zip(ts, ts[1:-1], ddpm_times(s, 10)[1:-1]):
        wanted = math.log(shift * sigma[u])
        nearest = abs(math.log(sigma[t]) - wanted) <= min(abs(math.log(sigma[t + d]) - wanted) for d in (-1, 1)) + 1e-12
        assert nearest or t == previous - 1  # a level beyond sigma_T is taken one step below the last one


def test_the_shift_grid_keeps_each_solver_exact_and_of_its_order():
    """On the shift grid the 2M solvers still land on a single data point, and Heun keeps its ~4x per halving on
    the whole flow ODE of Gaussian data."""
    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out, _ = solve("flow_dpmpp2m", lambda x, t: (MU - x) / (1 - t.view(-1, 1, 1, 1)), x.view(4, 1, 4, 4), steps=3,
                   time_grid="shift", shift=2.0)
    torch.testing.assert_close(out, torch.full_like(out, MU))
    exact = exact_ode(x, 0.0, 1.0, 1.0, 0.0)
    err = {n: (solve("heun", flow_velocity, x, steps=n, time_grid="shift", shift=2.0)[0] - exact).abs().max().item()
           for n in (16, 32)}
    assert 3.0 < err[16] / err[32] < 5.0, err


def test_heun_and_euler_keep_their_order_on_the_edm_grid():
    """Whole flow ODE (t = 0 to 1) on the EDM grid: Heun's error falls ~4x per halving, Euler's ~2x."""
    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exact = exact_ode(x, 0.0, 1.0, 1.0, 0.0)
    err = {(name, steps): (solve(name, flow_velocity, x, steps=steps, time_grid="edm")[0] - exact).abs().max().item()
           for name in ("euler", "heun") for steps in (16, 32, 64)}
    for coarse, fine in ((16, 32), (32, 64)):
        assert 3.0 < err["heun", coarse] / err["heun", fine] < 5.0, err
        assert 1.7 < err["euler", coarse] / err["euler", fine] < 2.3, err


def counting_net():
    calls = []

    def net(x, t, labels):
        calls.append(x.shape[0])
        return torch.tanh(x) * (1 + t.view(-1, 1, 1, 1)) + labels.view(-1, 1, 1, 1).float() / 10
    return net, calls


def test_guidance_outside_its_interval_is_exactly_the_unguided_update():
    net, calls = counting_net()
    x, labels = torch.randn(3, 3, 4, 4), torch.tensor([1, 5, 9])
    levels = noise_levels("flow", None)
    fn = guided(net, labels, 3.0, 10, interval=(0.5, 2.0), levels=levels)
    for t in (0.2, 0.8):  # sigma = 4 and 0.25: outside (0.5, 2]
        tt = torch.full((3,), t)
        calls.clear()
        assert torch.equal(fn(x, tt), net(x, tt, labels)) and calls == [3, 3]  # one pass each, no null rows
    tt = torch.full((3,), 0.5)  # sigma = 1: inside
    calls.clear()
    out = fn(x, tt)
    assert calls == [6]
    cond, uncond = net(x, tt, labels), net(x, tt, torch.full_like(labels, 10))
    torch.testing.assert_close(out, uncond + 3.0 * (cond - uncond))
    # the same for a ddpm model: sigma from the schedule
    s = linear_schedule(400)
    ddpm_fn = guided(net, labels, 3.0, 10, interval=(0.5, 2.0), levels=noise_levels("ddpm", s))
    sigma = (s.one_minus_alpha_bars / s.alpha_bars).sqrt()
    inside = [t for t in range(1, 401) if 0.5 < sigma[t] <= 2.0]
    for t, expect_inside in ((inside[0] - 1, False), (inside[0], True), (inside[-1], True), (inside[-1] + 1, False)):
        calls.clear()
        ddpm_fn(x, torch.full((3,), t / 400))
        assert calls == ([6] if expect_inside else [3])


def test_guidance_schedules_start_unguided_and_average_w():
    p = torch.linspace(0, 1, 100001, dtype=torch.float64)
    for kind in ("linear", "cosine"):
        w = guidance_weight(3.0, p, kind)
        assert w[0] == 1.0 and w.mean().item() == pytest.approx(3.0, abs=1e-3) and (w.diff() >= 0).all()
    assert torch.equal(guidance_weight(3.0, p, "constant"), torch.full_like(p, 3.0))
    net, calls = counting_net()
    x, labels = torch.randn(2, 3, 4, 4), torch.tensor([3, 4])
    fn = guided(net, labels, 3.0, 10, schedule="linear", levels=noise_levels("flow", None))
    assert torch.equal(fn(x, torch.zeros(2)), net(x, torch.zeros(2), labels))  # p = 0: w = 1, one pass
    tt = torch.full((2,), 0.75)
    cond, uncond = net(x, tt, labels), net(x, tt, torch.full_like(labels, 10))
    torch.testing.assert_close(fn(x, tt), uncond + 4.0 * (cond - uncond))  # w = 1 + 2 * 2 * 0.75


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_one_batched_guidance_pass_equals_two_passes(norm):
    """The conditional and null rows in one forward pass give the images two separate passes give: each row's output
    depends on that row alone (GroupNorm; BatchNorm in eval mode, as sampling runs models)."""
    exp = experiment(model_norm=norm, guidance=2.5)
    torch.manual_seed(0)
    model = build_model(exp.model, 10).eval()
    x, t, labels = torch.randn(4, 3, 32, 32), torch.full((4,), 0.4), torch.tensor([0, 3, 7, 9])
    with torch.inference_mode():
        batched = guided(model, labels, 2.5, 10)(x, t)
        cond, uncond = model(x, t, labels), model(x, t, torch.full_like(labels, 10))
    torch.testing.assert_close(batched, uncond + 2.5 * (cond - uncond), rtol=1e-5, atol=1e-5)


def experiment(model_norm="group", objective="flow", **sample):
    sample = {"sampler": "euler" if objective == "flow" else "ddim", "steps": 4, "guidance": 2.0, **sample}
    return build_experiment("fast", {
        "data": {"dataset": "digits"},
        "model": {"arch": "unet", "channels": [8, 16], "conditioning": "embedding", "time_embedding": True,
                  "norm": model_norm},
        "diffusion": {"objective": objective, "T": 100},
        "train": {"label_dropout": 0.1},
        "sample": sample,
    }, "test")


@pytest.mark.parametrize("objective,sampler", [("flow", "flow_dpmpp2m"), ("ddpm", "dpmpp2m")])
def test_interval_guidance_is_counted_per_guided_step(objective, sampler):
    """NFE per image = steps + the steps whose noise level is inside the interval, counted through the network."""
    exp = experiment(objective=objective, sampler=sampler, steps=6, time_grid="edm", guidance_interval=[0.3, 3.0])
    torch.manual_seed(0)
    model = build_model(exp.model, 10).eval()
    labels = torch.arange(10)
    result = sample_images(exp, model, torch.device("cpu"), labels, 10)
    if objective == "flow":
        sigmas = [(1 - t) / t if t > 0 else math.inf for t in flow_times(6, "edm")[:-1]]
    else:
        s = linear_schedule(100)
        sigmas = [((s.one_minus_alpha_bars[t] / s.alpha_bars[t]).sqrt().item()) for t in ddpm_times(s, 6, "edm")[:-1]]
    guided_steps = sum(0.3 < sg <= 3.0 for sg in sigmas)
    assert 0 < guided_steps < 6 and result.nfe == 6 + guided_steps


def test_sample_settings_are_validated():
    with pytest.raises(ConfigError, match="guidance_interval.*0 <= lo < hi"):
        experiment(guidance_interval=[2.0, 1.0])
    with pytest.raises(ConfigError, match="guidance_interval"):
        experiment(guidance_interval=[1.0])
    with pytest.raises(ConfigError, match="guidance is\\s+off|which is off"):
        experiment(guidance=1.0, guidance_interval=[0.5, 2.0])
    with pytest.raises(ConfigError, match="which is off"):
        experiment(guidance=1.0, guidance_schedule="cosine")
    with pytest.raises(ConfigError, match="needs diffusion.objective=ddpm"):
        experiment(sampler="dpmpp2m")
    with pytest.raises(ConfigError, match="needs diffusion.objective=flow"):
        experiment(objective="ddpm", sampler="flow_dpmpp2m")
    with pytest.raises(ConfigError, match="time_grid=edm needs a few-step sampler"):
        experiment(objective="ddpm", sampler="ddpm", steps=0, time_grid="edm")
    with pytest.raises(ConfigError, match="rho"):
        experiment(rho=0.0)
    with pytest.raises(ConfigError, match="time_grid.*not allowed"):
        experiment(time_grid="karras")
    with pytest.raises(ConfigError, match="sample.shift=3 would be ignored: it sets sample.time_grid=shift"):
        experiment(shift=3.0)
    with pytest.raises(ConfigError, match="sample.rho=5 would be ignored: it sets sample.time_grid=edm"):
        experiment(time_grid="shift", rho=5.0)
    with pytest.raises(ConfigError, match="shift"):
        experiment(time_grid="shift", shift=0.0)


def test_sample_tag_names_every_method_setting():
    plain = experiment()
    fancy = experiment(sampler="flow_dpmpp2m", steps=8, time_grid="edm", rho=5, guidance_interval=[0.3, 5],
                       guidance_schedule="linear")
    assert sample_tag(10000, plain, True, 500) == "step0010000-euler4-w2-n500-seed1234"
    assert sample_tag(10000, fancy, True, 500) == "step0010000-flow_dpmpp2m8-edm5-w2-gi0.3-5-glinear-n500-seed1234"
    shifted = experiment(time_grid="shift", shift=2.5)
    assert sample_tag(10000, shifted, True, 500) == "step0010000-euler4-shift2.5-w2-n500-seed1234"
