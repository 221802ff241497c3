"""Training objectives: one call returns the loss for a batch of clean images.

Randomness (t, noise, label dropout) is drawn for the whole *global* batch from the step's generator and then
sliced to this rank's share, so one process and several ranks see exactly the same draws for the same sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .schedules import NoiseSchedule


@dataclass(frozen=True)
class Share:
    """This rank's rows [start, start + size) of a global batch of ``total`` rows."""

    start: int = 0
    size: int = 0
    total: int = 0

    @staticmethod
    def whole(batch: int) -> "Share":
        return Share(0, batch, batch)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.start:self.start + self.size]


def _draw_noise(x0: torch.Tensor, share: Share, generator: torch.Generator) -> torch.Tensor:
    full = torch.randn((share.total, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype)
    return share.take(full)


def drop_labels(labels, num_classes: int, p: float, share: Share, generator: torch.Generator):
    """Replace a fraction p of labels by the null class ``num_classes`` (classifier-free guidance training)."""
    if labels is None or p <= 0:
        return labels
    drop = share.take(torch.rand(share.total, generator=generator, device=labels.device)) < p
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


class DDPMObjective:
    """Algorithm 1 of Ho et al.: t ~ U{1..T}, x_t = sqrt(a_bar_t) x0 + sqrt(1 - a_bar_t) eps,
    loss |eps - eps_theta|^2."""

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule

    def noisy(self, x0, t, eps):
        s = self.schedule
        return s.sqrt_alpha_bars[t].view(-1, 1, 1, 1) * x0 + s.sqrt_one_minus_alpha_bars[t].view(-1, 1, 1, 1) * eps

    def __call__(self, net, x0, labels, generator, share: Share | None = None):
        share = share or Share.whole(x0.shape[0])
        T = self.schedule.T
        t = share.take(torch.randint(1, T + 1, (share.total,), generator=generator, device=x0.device))
        eps = _draw_noise(x0, share, generator)
        prediction = net(self.noisy(x0, t, eps), t.float() / T, labels)
        return F.mse_loss(prediction.float(), eps)


class FlowMatchingObjective:
    """Conditional flow matching on the straight path x_t = (1 - t) z + t x0 from noise z (t=0) to data (t=1);
    the network regresses the constant velocity x0 - z (rectified flow, Lipman et al. / Liu et al.)."""

    @staticmethod
    def path(x0, t, z):
        t = t.view(-1, 1, 1, 1)
        return (1 - t) * z + t * x0, x0 - z

    def __call__(self, net, x0, labels, generator, share: Share | None = None):
        share = share or Share.whole(x0.shape[0])
        t = share.take(torch.rand(share.total, generator=generator, device=x0.device))
        z = _draw_noise(x0, share, generator)
        x_t, velocity = self.path(x0, t, z)
        return F.mse_loss(net(x_t, t, labels).float(), velocity)


def make_objective(kind: str, schedule: NoiseSchedule | None):
    """``ddpm`` (needs the schedule) or ``flow``; any other kind is an error, not flow matching by default."""
    if kind == "ddpm":
        if schedule is None:
            raise ValueError("the ddpm objective needs a noise schedule")
        return DDPMObjective(schedule)
    if kind == "flow":
        return FlowMatchingObjective()
    raise ValueError(f"unknown objective {kind!r}; one of ddpm, flow")
