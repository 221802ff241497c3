"""benchmarks/preset_cost.py: FLOPs counted on the meta device match the closed form, NFE is counted through the
real samplers, and the cifar_best cost written in docs/quality.md is the one the script computes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ddpm_hpc.config import build_experiment, load_experiment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import preset_cost  # noqa: E402


def test_flops_of_the_two_layer_conv_net_are_the_closed_form():
    """conv 3->64 and 64->3, 3x3 at 32x32: 2 * 3 * 64 * 9 * 1024 multiply-adds x 2 each; the backward pass adds the
    weight gradients of both and the input gradient of the second (the images need none)."""
    exp = build_experiment("c", {"model": {"arch": "conv"}}, "test")
    forward, train = preset_cost.network_flops(exp)
    one = 2 * 3 * 64 * 9 * 32 * 32
    assert forward == 2 * one and train == 5 * one


@pytest.mark.parametrize("sample,nfe", [
    ({"sampler": "heun", "steps": 10, "guidance": 2.0}, 38),
    ({"sampler": "flow_dpmpp2m", "steps": 7, "guidance": 2.0, "guidance_interval": [0.5, 3.0]}, 7 + 3),
    ({"sampler": "euler", "steps": 4, "guidance": 1.0}, 4),
    ({"sampler": "flow_dpmpp2m", "steps": 8, "guidance": 2.5, "guidance_interval": [2.0, 5.0], "time_grid": "shift",
      "shift": 4.0}, 8 + 2),  # mnist_best's default: of sigma = inf, 28, 12, 6.7, 4, 2.4, 1.3, 0.57 two are guided
])
def test_nfe_is_counted_through_the_samplers(sample, nfe):
    exp = build_experiment("f", {
        "model": {"arch": "unet", "channels": [8, 16], "conditioning": "embedding", "time_embedding": True},
        "diffusion": {"objective": "flow"}, "train": {"label_dropout": 0.1}, "sample": sample}, "test")
    assert preset_cost.counted_nfe(exp) == nfe


def test_cifar_best_cost_in_the_docs_is_the_computed_one(monkeypatch):
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(ROOT / "experiments"))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    cost = preset_cost.preset_cost(load_experiment("cifar_best"))
    assert cost["train_images"] == 128 * 100_000
    docs = (ROOT / "docs" / "quality.md").read_text()
    assert preset_cost.describe(cost) in " ".join(docs.split())
