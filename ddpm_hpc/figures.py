"""Figures: the practical's forward-process grid (section 3) and the loss curve."""

from __future__ import annotations

from pathlib import Path

import torch

from .data import to_model_range
from .images import display, display_noise, save_grid
from .safe_write import save_figure
from .objectives import DDPMObjective, FlowMatchingObjective


@torch.no_grad()
def forward_process_figure(model, objective, images_uint8, labels, path: Path, seed: int = 0) -> Path:
    """Four rows: x, x_t, the noise, and the network's prediction (epsilon for DDPM; for flow matching the
    prediction's implied noise x_t - t v, so the rows compare like with like)."""
    device = next(model.parameters()).device
    x0 = to_model_range(images_uint8.to(device))
    n = x0.shape[0]
    gen = torch.Generator(device=device).manual_seed(seed)
    eps = torch.randn(x0.shape, generator=gen, device=device)
    was_training = model.training
    model.eval()
    if isinstance(objective, DDPMObjective):
        T = objective.schedule.T
        t = torch.randint(1, T + 1, (n,), generator=gen, device=device)
        x_t = objective.noisy(x0, t, eps)
        predicted = model(x_t, t.float() / T, labels)
    else:
        assert isinstance(objective, FlowMatchingObjective)
        t = torch.rand(n, generator=gen, device=device)
        x_t, _ = objective.path(x0, t, eps)
        v = model(x_t, t, labels)
        predicted = x_t - t.view(-1, 1, 1, 1) * v  # x_t = z + t v on the straight path, so z = x_t - t v
    model.train(was_training)
    rows = torch.cat([display(x0), display(x_t), display_noise(eps), display_noise(predicted)])
    return save_grid(rows, path, nrow=n)


def loss_plot(records: list[dict], path: Path, title: str = "") -> Path | None:
    """Raw (window mean) and smoothed loss of the metrics ``records`` against step, log scale. None if there is
    nothing logged yet."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, [r["loss"] for r in records], alpha=0.35, label="loss (mean per log interval)")
    ax.plot(steps, [r["loss_smooth"] for r in records], label="smoothed (as the practical)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
