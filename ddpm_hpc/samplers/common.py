"""What every sampler shares: the denoiser type, a time tensor, and which states the trajectory keeps."""

from __future__ import annotations

from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_tensor(x, value: float) -> torch.Tensor:
    return torch.full((x.shape[0],), value, device=x.device, dtype=torch.float32)


def snapshots(total: int, keep: int) -> set[int]:
    """Indices of the ``keep`` states (of ``total``, x_T first) that the trajectory holds, evenly spread."""
    if keep <= 0:
        return set()
    return {round(i * (total - 1) / max(keep - 1, 1)) for i in range(keep)}
