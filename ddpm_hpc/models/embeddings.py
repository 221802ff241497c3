"""Conditioning inputs shared by the networks: sinusoidal time features and class codes with a null class."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Transformer-style features of t in [0, 1] (scaled to the DDPM step range so low frequencies matter)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = scale * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def one_hot_with_null(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The practical's one-hot code; label ``num_classes`` (the CFG null class) maps to all zeros."""
    return F.one_hot(labels, num_classes + 1)[:, :num_classes].float()


class ClassEmbedding(nn.Module):
    """Learned class vectors with an extra row for the null class used by classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels)
