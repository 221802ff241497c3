"""Helpers several test modules share (training and checkpoint helpers: _train_helpers.py; dataset files:
fixtures.py): report pages read back as a browser would, a random network standing in for Inception-v3, and
roots with fake SLURM commands for submission tests."""

from __future__ import annotations

import re
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml

from ddpm_hpc.checkpoint import save_checkpoint
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


# -- a login node without a cluster: fake SLURM commands on PATH (submitit runs for real against them) -----------------

# The experiment ``tiny`` and the cluster defaults of fake_slurm_roots.
SUBMIT_TINY = {"data": {"dataset": "digits", "batch_size": 16}, "model": {"arch": "conv"}, "diffusion": {"T": 50},
        "train": {"steps": 30, "device": "cpu"}, "sample": {"sampler": "ddim", "steps": 5}}
SUBMIT_CLUSTER = {"slurm": {"partition": "debug", "qos": None, "gres": None, "gpus_per_node": 0, "time_min": 10,
                     "sample_time_min": 10, "signal_delay_s": 30, "setup": []}}
# What the local test cluster (tests/slurm/cluster.sh) prints: partition debug, MaxTime 60 min, nodes with gpu:1.
SLURM_TEXT = Path(__file__).parent / "slurm_text"


def fake_slurm_roots(tmp_path: Path, monkeypatch) -> Path:
    """Experiment/checkpoint/data roots with the experiment ``tiny``, and a PATH whose SLURM commands are fakes that
    accept every job (``fake(...)`` changes one of them). The ``roots`` fixture of the submission tests."""
    for sub in ("experiments", "checkpoints", "data", "bin"):
        (tmp_path / sub).mkdir()
    (tmp_path / "experiments" / "tiny.yaml").write_text(yaml.safe_dump(SUBMIT_TINY))
    (tmp_path / "experiments" / "_cluster.yaml").write_text(yaml.safe_dump(SUBMIT_CLUSTER))
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path / "experiments"))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("DDPM_HPC_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    fake(tmp_path, "squeue", "exit 0")  # no live jobs
    fake(tmp_path, "srun", "exit 0")
    partitions = SLURM_TEXT / "scontrol_show_partition_oneline.txt"
    fake(tmp_path, "scontrol", f'[ "$2" = partition ] && grep "^PartitionName=$4 " {partitions} && exit 0; '
                               f'echo "Partition $4 not found" >&2; exit 1')
    fake(tmp_path, "sinfo", 'echo "gpu:1"')
    fake(tmp_path, "sbatch", 'n=$(($(cat "$0.n" 2>/dev/null || echo 4241) + 1)); echo $n > "$0.n"; '
                             'echo "Submitted batch job $n"')  # 4242, 4243, ...
    return tmp_path


def fake(root: Path, name: str, body: str) -> None:
    path = root / "bin" / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def checkpoints_without_pointer(root: Path, config_json: str) -> None:
    """Steps 10 and 20 of ``tiny`` on disk, ``latest.json`` lost."""
    folder = root / "checkpoints" / "tiny"
    for step in (10, 20):
        save_checkpoint(folder, step, {"w": torch.zeros(2)}, {"step": str(step), "config": config_json})
    (folder / "latest.json").unlink()
