"""Network evaluations per image (NFE) as ``sample_images`` reports them: counted from the rows that go through the
network (sampling.CountingNet), checked here against a wrapper model that counts its own forward calls and rows."""

from __future__ import annotations

import pytest
import torch

from ddpm_hpc.config import build_experiment
from ddpm_hpc.sampling import class_blocks, sample_images


class CallCounter(torch.nn.Module):
    """Stands in for the U-Net: counts forward calls and the rows of each, returns a small pull towards 0."""

    def __init__(self):
        super().__init__()
        self.calls, self.rows = 0, 0

    def forward(self, x, t, labels=None):
        self.calls += 1
        self.rows += x.shape[0]
        return -0.1 * x


def _exp(objective: str, sampler: str, steps: int, guidance: float, conditioning: str = "embedding"):
    return build_experiment("nfe", {
        "data": {"dataset": "digits"}, "model": {"arch": "unet", "conditioning": conditioning},
        "diffusion": {"objective": objective, "T": 40},
        "train": {"label_dropout": 0.1 if conditioning != "none" else 0.0},  # guidance: a model that saw "no class"
        "sample": {"sampler": sampler, "steps": steps, "guidance": guidance, "batch_size": 4}}, "test")


# (objective, sampler, steps, NFE per image without guidance): the closed forms
CASES = [("ddpm", "ddpm", 0, 40), ("ddpm", "ddim", 8, 8), ("flow", "euler", 6, 6), ("flow", "heun", 5, 9)]


@pytest.mark.parametrize("objective,sampler,steps,nfe", CASES)
@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_nfe_is_counted_for_every_sampler_with_and_without_guidance(objective, sampler, steps, nfe, guidance):
    exp = _exp(objective, sampler, steps, guidance)
    model = CallCounter()
    n = 10  # three batches of 4, 4 and 2: the count is per image drawn, not per batch
    labels = class_blocks(10, n, "cpu")
    result = sample_images(exp, model, torch.device("cpu"), labels, n)
    assert result.nfe == model.rows / n  # independent of the sampler's own counter
    assert result.nfe == nfe * (2 if guidance != 1.0 else 1)  # the two branches of guidance count as two
    batches = 3
    assert model.calls == batches * nfe  # guidance batches both branches: one call, twice the rows


def test_nfe_of_unconditional_sampling_ignores_guidance():
    exp = _exp("flow", "heun", 4, 1.0, conditioning="none")
    model = CallCounter()
    result = sample_images(exp, model, torch.device("cpu"), None, 6)
    assert result.nfe == model.rows / 6 == 7


def test_nfe_is_in_the_sample_provenance(tmp_path, monkeypatch):
    """``ddpm-hpc sample`` writes the counted NFE into the grid's JSON."""
    import dataclasses
    import json

    from ddpm_hpc import sampling
    from ddpm_hpc.sampling import Loaded

    exp = _exp("flow", "euler", 3, 2.0)
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path))
    counter = CallCounter()

    class FakeCkpt:
        step, sha256, path = 7, "0" * 64, tmp_path / "step.safetensors"

    monkeypatch.setattr(sampling, "load_for_sampling", lambda e, d: Loaded(FakeCkpt(), e, counter, "ema", "fp32"))
    exp = exp.replace(sample=dataclasses.replace(exp.sample, per_class=2, trajectory=False))
    png = sampling.sample_experiment(exp, log_fn=lambda *_: None)
    info = json.loads(png.with_suffix(".json").read_text())
    assert info["nfe_per_image"] == counter.rows / 20 == 6
