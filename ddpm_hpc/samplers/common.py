"""What every sampler shares: the denoiser type, a time tensor, and ``trace``, the one wrapper that runs a sampler's
update loop and keeps its trajectory and progress."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


def time_tensor(x, value: float) -> torch.Tensor:
    return torch.full((x.shape[0],), value, device=x.device, dtype=torch.float32)


def snapshots(total: int, keep: int) -> set[int]:
    """Indices of the ``keep`` states (of ``total``, x_T first) that the trajectory holds, evenly spread."""
    if keep <= 0:
        return set()
    return {round(i * (total - 1) / max(keep - 1, 1)) for i in range(keep)}


def trace(states: Iterable[torch.Tensor], x: torch.Tensor, steps: int, *, keep: int = 0,
          progress: Progress | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run a sampler's loop (``states`` yields x after each of its ``steps`` updates, starting from ``x``) and return
    (the last x, a trajectory of ``keep`` evenly spread states with x_T first; empty when keep is 0), calling
    ``progress(i, steps)`` after update i."""
    trajectory, marks = [x], snapshots(steps + 1, keep)
    for i, x in enumerate(states, start=1):
        if i in marks:
            trajectory.append(x)
        if progress:
            progress(i, steps)
    return x, trajectory[:keep] if keep else []
