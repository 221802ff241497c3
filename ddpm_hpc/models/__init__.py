"""Denoising networks. Every model is called as ``net(x, t, labels)``:

- ``x``: B x 3 x H x W, ``t``: B floats in [0, 1] (t/T for DDPM, flow time for flow matching),
- ``labels``: B class indices, where ``num_classes`` is the null class of classifier-free guidance, or None.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .conv import SeedConvNet
from .seed_unet import SeedUNet
from .unet import UNet


def build_model(cfg: ModelConfig, num_classes: int, image_shape=(3, 32, 32)) -> nn.Module:
    """Construct the network and materialise its lazy layers with one dry forward pass, so that the parameters
    exist before the optimiser, EMA and checkpoint loading see them (an uninitialised lazy parameter cannot be
    saved)."""
    if cfg.arch == "conv":
        net = SeedConvNet(out_channels=image_shape[0])
    elif cfg.arch == "seed_unet":
        net = SeedUNet(cfg.channels, image_shape[0], num_classes, cfg.conditioning, cfg.time_embedding)
    else:
        net = UNet(cfg.channels, image_shape[0], num_classes, cfg.conditioning, cfg.time_embedding, cfg.norm,
                   cfg.dropout)
    net.eval()  # a dry run in train mode would move BatchNorm's running statistics
    with torch.no_grad():
        labels = torch.zeros(2, dtype=torch.long) if cfg.conditioning != "none" else None
        net(torch.zeros(2, *image_shape), torch.zeros(2), labels)
    return net.train()


__all__ = ["build_model", "SeedConvNet", "SeedUNet", "UNet"]
