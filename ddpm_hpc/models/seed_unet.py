"""The practical's lazy U-Net (section 5) with its class injection at the bottleneck (section 6).

Faithful to the practical: 4-2-1 down/up convolutions, four skip connections, widths (72, 96, 128, 196) and a
256-wide bottleneck, the one-hot class code concatenated at the bottleneck and after the first up block. The
practical also defines a fifth down block that forward() never calls; it would stay an uninitialised lazy
parameter and break saving, so it is left out. Optional (off in the seed presets): a sinusoidal time embedding
added to every block, and a learned class embedding with a null class for classifier-free guidance.
"""

from __future__ import annotations

import torch
from torch import nn

from .embeddings import ClassEmbedding, one_hot_with_null, sinusoidal


def _block(out_channels: int, up: bool = False) -> nn.Sequential:
    conv = nn.LazyConvTranspose2d if up else nn.LazyConv2d
    return nn.Sequential(conv(out_channels, 4, 2, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())


class SeedUNet(nn.Module):
    def __init__(self, channels=(72, 96, 128, 196, 256), out_channels: int = 3, num_classes: int = 10,
                 conditioning: str = "none", time_embedding: bool = False, time_dim: int = 128):
        super().__init__()
        c1, c2, c3, c4, c_mid = channels
        self.num_classes = num_classes
        self.conditioning = conditioning
        self.down = nn.ModuleList([_block(c1), _block(c2), _block(c3), _block(c4)])
        self.bottleneck = nn.LazyConv2d(c_mid, 3, 1, 1, bias=False)
        self.up = nn.ModuleList([_block(c_mid, up=True), _block(c4, up=True), _block(c3, up=True),
                                 _block(c2, up=True)])
        self.conv_last = nn.LazyConv2d(out_channels, 1)
        if conditioning == "embedding":
            self.class_embedding = ClassEmbedding(num_classes, num_classes)
        self.time_dim = time_dim if time_embedding else 0
        if time_embedding:
            self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU())
            # One projection per block output: the embedding is added as a per-channel bias.
            widths = [c1, c2, c3, c4, c_mid, c_mid, c4, c3, c2]
            self.time_proj = nn.ModuleList([nn.Linear(time_dim, w) for w in widths])

    def _class_code(self, labels: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "onehot":
            return one_hot_with_null(labels, self.num_classes)
        return self.class_embedding(labels)

    def forward(self, x, t=None, labels=None):
        temb = self.time_mlp(sinusoidal(t, self.time_dim)) if self.time_dim else None
        proj = iter(self.time_proj) if self.time_dim else None

        def add_time(h):
            return h if temb is None else h + next(proj)(temb)[:, :, None, None]

        start, skips = x, []
        for block in self.down:
            x = add_time(block(x))
            skips.append(x)
        x = add_time(self.bottleneck(skips[-1]))
        code = None
        if self.conditioning != "none":
            code = self._class_code(labels)[:, :, None, None]
        for i, block in enumerate(self.up):
            extra = [code.expand(-1, -1, x.shape[2], x.shape[3])] if code is not None and i < 2 else []
            x = add_time(block(torch.cat([x, skips[-1 - i], *extra], dim=1)))
        # Under autocast x is bf16: casting the 3-channel input (which conv_last would round to bf16 anyway) keeps
        # the cat in bf16, instead of promoting the full-resolution activations to fp32 and back (same result).
        return self.conv_last(torch.cat([x, start.to(x.dtype)], dim=1))
