"""Helpers several test modules share (training and checkpoint helpers: _train_helpers.py; dataset files:
fixtures.py): report pages read back as a browser would, and a random network standing in for Inception-v3."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from ddpm_hpc.metrics import fid

# -- report pages ----------------------------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="headless browser check needs /usr/bin/chromium "
                                    "(Debian: apt-get install -y --no-install-recommends chromium; .ci/run does it)")


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.links, self.scripts = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag in ("script", "link") and (a.get("src") or a.get("href")):
            self.scripts.append(a.get("src") or a.get("href"))


def parse(page: Path) -> Images:
    p = Images()
    p.feed(page.read_text())
    return p


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def image_status(page: Path, profile: Path) -> tuple[str, list[str]]:
    """Load the page from disk; its inline script writes ``data-images="ok/total"`` on <body> and
    ``data-loaded`` on each <img> once the load event fired (naturalWidth > 0)."""
    out = chromium(["--dump-dom", page.as_uri()], profile)
    assert out.returncode == 0, out.stderr[-2000:]
    body = re.search(r'<body[^>]*data-images="(\d+/\d+)"', out.stdout)
    assert body, f"page script did not run; DOM starts: {out.stdout[:500]}"
    return body.group(1), re.findall(r'data-loaded="(\w+)"', out.stdout)


# -- metrics ----------------------------------------------------------------------------------------------------------

class RandomFeatures(torch.nn.Module):
    """A small random conv net standing in for Inception-v3 (uint8 N x 3 x 32 x 32 -> N x 32 features)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(),
                                       torch.nn.Conv2d(16, 32, 3, stride=2), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        return self.net(x.float() / 127.5 - 1)


def stand_in() -> fid.FeatureNet:
    return fid.FeatureNet(RandomFeatures().eval(), "random0", "random-stand-in")
