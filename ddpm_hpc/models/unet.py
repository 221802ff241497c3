"""A small modern U-Net (residual blocks, GroupNorm, SiLU, time and class embeddings added in every block),
the backbone of the toolkit's own "best" presets. One residual block per resolution level keeps it CPU-friendly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import ClassEmbedding, one_hot_with_null, sinusoidal


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.GroupNorm(min(8, channels), channels) if kind == "group" else nn.BatchNorm2d(channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, norm: str, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(norm, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(norm, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    def __init__(self, channels=(64, 128, 256), out_channels: int = 3, num_classes: int = 10,
                 conditioning: str = "embedding", time_embedding: bool = True, norm: str = "group",
                 dropout: float = 0.0):
        super().__init__()
        c0 = channels[0]
        emb_dim = 4 * c0
        self.num_classes, self.conditioning = num_classes, conditioning
        self.time_embedding, self.c0 = time_embedding, c0
        self.time_mlp = nn.Sequential(nn.Linear(c0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if conditioning == "embedding":
            self.class_embedding = ClassEmbedding(num_classes, emb_dim)
        elif conditioning == "onehot":
            self.class_embedding = nn.Linear(num_classes, emb_dim, bias=False)
        self.stem = nn.LazyConv2d(c0, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        prev = c0
        for i, c in enumerate(channels):
            self.down.append(ResBlock(prev, c, emb_dim, norm, dropout))
            last = i == len(channels) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            prev = c
        self.mid = ResBlock(prev, prev, emb_dim, norm, dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, c in reversed(list(enumerate(channels))):
            self.up.append(ResBlock(prev + c, c, emb_dim, norm, dropout))
            self.upsample.append(nn.Identity() if i == 0 else nn.Conv2d(c, channels[i - 1], 3, padding=1))
            prev = channels[i - 1] if i else c
        self.out = nn.Sequential(_norm(norm, c0), nn.SiLU(), nn.Conv2d(c0, out_channels, 3, padding=1))

    def _embedding(self, t, labels, batch, device):
        emb = self.time_mlp(sinusoidal(t, self.c0)) if self.time_embedding else \
            self.time_mlp(torch.zeros(batch, self.c0, device=device))
        if self.conditioning == "embedding":
            emb = emb + self.class_embedding(labels)
        elif self.conditioning == "onehot":
            emb = emb + self.class_embedding(one_hot_with_null(labels, self.num_classes))
        return emb

    def forward(self, x, t=None, labels=None):
        emb = self._embedding(t, labels, x.shape[0], x.device)
        h, skips = self.stem(x), []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for block, up in zip(self.up, self.upsample):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(h)
