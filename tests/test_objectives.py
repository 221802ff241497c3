"""Training objectives: DDPM noise prediction (Ho et al., Algorithm 1) and flow matching on the straight path,
both against hand computations, and the Share slicing that makes one process and several ranks draw alike."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_hpc.objectives import DDPMObjective, FlowMatchingObjective, Share, drop_labels, make_objective
from ddpm_hpc.schedules import linear_schedule




class Recorder:
    """A deterministic stand-in network that remembers its inputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, labels):
        self.calls.append((x.clone(), t.clone(), None if labels is None else labels.clone()))
        return 0.5 * x + t.view(-1, 1, 1, 1)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, 8, 8), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_ddpm_loss_equals_hand_computation():
    T, n = 50, 6
    objective = DDPMObjective(linear_schedule(T, 1e-4, 0.02))
    x0 = images(n)
    net = Recorder()
    loss = objective(net, x0, None, torch.Generator().manual_seed(7))

    # Algorithm 1 by hand, in float64: t ~ U{1..T} first, then eps ~ N(0, I), from the same generator.
    gen = torch.Generator().manual_seed(7)
    t = torch.randint(1, T + 1, (n,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen).double()
    assert t.min() >= 1 and t.max() <= T
    alpha_bar = []
    for ti in t.tolist():
        ab = 1.0
        for s in range(1, ti + 1):
            ab *= 1 - (1e-4 + (0.02 - 1e-4) * s / T)
        alpha_bar.append(ab)
    ab = torch.tensor(alpha_bar, dtype=torch.float64).view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps
    t_in = t.double() / T
    expected = ((eps - (0.5 * x_t + t_in.view(-1, 1, 1, 1))) ** 2).mean()

    (seen_x, seen_t, seen_labels), = net.calls
    torch.testing.assert_close(seen_x.double(), x_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(seen_t.double(), t_in, rtol=0, atol=1e-7)  # the network sees t/T in (0, 1]
    assert seen_labels is None
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ddpm_loss_is_zero_for_a_perfect_noise_predictor():
    T = 100
    schedule = linear_schedule(T)
    objective = DDPMObjective(schedule)
    x0 = images(4)

    def oracle(x_t, t, labels):  # eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)
        idx = (t * T).round().long()
        return (x_t - schedule.sqrt_alpha_bars[idx].view(-1, 1, 1, 1) * x0) / \
            schedule.sqrt_one_minus_alpha_bars[idx].view(-1, 1, 1, 1)

    assert objective(oracle, x0, None, torch.Generator().manual_seed(1)).item() < 1e-8


def test_flow_path_endpoints_and_velocity():
    x0, z = images(5, seed=1), images(5, seed=2)
    at0, v = FlowMatchingObjective.path(x0, torch.zeros(5), z)
    at1, _ = FlowMatchingObjective.path(x0, torch.ones(5), z)
    torch.testing.assert_close(at0, z)  # t = 0: noise
    torch.testing.assert_close(at1, x0)  # t = 1: data
    torch.testing.assert_close(v, x0 - z)
    # the velocity is the time derivative of the path
    t, h = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64), 1e-3
    ahead, _ = FlowMatchingObjective.path(x0.double(), t + h, z.double())
    here, _ = FlowMatchingObjective.path(x0.double(), t, z.double())
    torch.testing.assert_close((ahead - here) / h, (x0 - z).double(), rtol=0, atol=1e-9)
    mid, _ = FlowMatchingObjective.path(x0, torch.full((5,), 0.25), z)
    torch.testing.assert_close(mid, 0.75 * z + 0.25 * x0)


def test_flow_loss_equals_hand_computation():
    n = 6
    x0 = images(n)
    net = Recorder()
    labels = torch.arange(n)
    loss = FlowMatchingObjective()(net, x0, labels, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    t = torch.rand(n, generator=gen).double()  # t ~ U(0, 1) first, then the noise
    z = torch.randn(x0.shape, generator=gen).double()
    tv = t.view(-1, 1, 1, 1)
    x_t = (1 - tv) * z + tv * x0.double()
    expected = (((x0.double() - z) - (0.5 * x_t + tv)) ** 2).mean()
    (seen_x, seen_t, seen_labels), = net.calls
    torch.testing.assert_close(seen_x.double(), x_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(seen_t.double(), t, rtol=0, atol=1e-7)
    assert torch.equal(seen_labels, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_make_objective():
    schedule = linear_schedule(10)
    assert isinstance(make_objective("ddpm", schedule), DDPMObjective)
    assert isinstance(make_objective("flow", None), FlowMatchingObjective)
    with pytest.raises(ValueError, match="unknown objective 'score'"):  # not flow matching by default
        make_objective("score", schedule)
    with pytest.raises(ValueError, match="needs a noise schedule"):
        make_objective("ddpm", None)


@pytest.mark.parametrize("kind", ["ddpm", "flow"])
@pytest.mark.parametrize("ranks", [2, 4])
def test_shares_of_a_global_batch_draw_the_same_rows_as_the_whole(kind, ranks):
    """Each rank draws t and the noise for the whole global batch from the step's generator and keeps its rows, so
    the concatenated network inputs of all ranks equal those of one process, and so does the mean loss."""
    total = 8
    objective = make_objective(kind, linear_schedule(100))
    x0 = images(total)
    whole_net = Recorder()
    whole_loss = objective(whole_net, x0, None, torch.Generator().manual_seed(11), Share.whole(total))
    size = total // ranks
    inputs, times, losses = [], [], []
    for rank in range(ranks):
        net = Recorder()
        share = Share(rank * size, size, total)
        losses.append(objective(net, share.take(x0), None, torch.Generator().manual_seed(11), share))
        inputs.append(net.calls[0][0])
        times.append(net.calls[0][1])
    assert torch.equal(torch.cat(inputs), whole_net.calls[0][0])
    assert torch.equal(torch.cat(times), whole_net.calls[0][1])
    assert torch.stack(losses).mean().item() == pytest.approx(whole_loss.item(), rel=1e-6)
    # without the global draw, a rank's own draw would differ from its rows of the whole batch
    alone = Recorder()
    objective(alone, x0[size:2 * size], None, torch.Generator().manual_seed(11))
    assert not torch.equal(alone.calls[0][0], whole_net.calls[0][0][size:2 * size])


def test_share_take_and_whole():
    x = torch.arange(10)
    assert torch.equal(Share(3, 4, 10).take(x), torch.tensor([3, 4, 5, 6]))
    assert Share.whole(10) == Share(0, 10, 10)


def test_label_dropout():
    labels = torch.arange(10).repeat(100)  # 1000 labels
    share = Share.whole(len(labels))
    assert drop_labels(labels, 10, 0.0, share, torch.Generator().manual_seed(0)) is labels
    assert drop_labels(None, 10, 0.5, share, torch.Generator().manual_seed(0)) is None
    assert (drop_labels(labels, 10, 1.0, share, torch.Generator().manual_seed(0)) == 10).all()
    dropped = drop_labels(labels, 10, 0.2, share, torch.Generator().manual_seed(0))
    is_null = dropped == 10
    assert abs(is_null.float().mean().item() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 1000)
    assert torch.equal(dropped[~is_null], labels[~is_null])  # the others are kept as they are
    # two halves of the global batch drop exactly the rows the whole batch drops
    halves = [drop_labels(Share(s, 500, 1000).take(labels), 10, 0.2, Share(s, 500, 1000),
                          torch.Generator().manual_seed(0)) for s in (0, 500)]
    assert torch.equal(torch.cat(halves), dropped)
