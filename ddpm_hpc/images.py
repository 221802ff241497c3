"""Writing image grids as PNG files (the only image format the toolkit writes)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from .data import to_uint8


def save_grid(images_uint8: torch.Tensor, path: Path, nrow: int, padding: int = 2) -> Path:
    """Save N x C x H x W uint8 images as a grid with ``nrow`` images per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images_uint8.float() / 255.0, nrow=nrow, padding=padding, pad_value=1.0)
    tmp = path.with_name(f".{path.name}.tmp")
    save_image(grid, tmp, format="png")
    tmp.replace(path)  # a half-written PNG is never visible under the final name
    return path


def display(x: torch.Tensor) -> torch.Tensor:
    """Model-range images ([-1, 1]) to uint8."""
    return to_uint8(x.detach().float().cpu())


def display_noise(x: torch.Tensor) -> torch.Tensor:
    """Noise or network outputs (unbounded) scaled per image to [0, 255], as the practical's ``normalise``."""
    x = x.detach().float().cpu()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp(min=1e-8) * 255).round().to(torch.uint8)
