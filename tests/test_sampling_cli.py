"""``ddpm-hpc sample`` and ``eval`` on real (tiny) checkpoints: the sampler must fit what the checkpoint was trained
for, the number of images is part of the tag, and sample files of another sampling are never replaced."""

from __future__ import annotations

import json

import pytest
from _train_helpers import roots, write_experiment

from jobs.cli import main
from ddpm_hpc.config import build_experiment, load_experiment
from ddpm_hpc.sampling import sample_tag
from ddpm_hpc.trainer import train

TRAIN = {"steps": 4, "lr": 0.001, "log_every": 2, "checkpoint_every": 4, "checkpoint_minutes": 0, "device": "cpu",
         "precision": "fp32"}
FLOW = {  # conditional flow matching, as the demo
    "data": {"dataset": "digits", "batch_size": 8},
    "model": {"arch": "unet", "channels": [8, 16], "conditioning": "embedding", "time_embedding": True,
              "norm": "group"},
    "diffusion": {"objective": "flow"},
    "train": {**TRAIN, "label_dropout": 0.1},
    "sample": {"sampler": "euler", "steps": 2, "guidance": 2.0, "per_class": 2},
}
DDPM = {  # unconditional epsilon prediction
    "data": {"dataset": "digits", "batch_size": 8},
    "model": {"arch": "seed_unet", "channels": [8, 8, 16, 16, 16]},
    "diffusion": {"T": 20},
    "train": TRAIN,
    "sample": {"sampler": "ddim", "steps": 2, "n": 4},
}
GRID = "step0000004-euler2-w2-n20-seed1234"  # flow's default grid: 2 per class


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Four trained experiments: flow, flow_b (the same with another seed: other weights), cond0 (flow without label
    dropout or guidance) and ddpm."""
    root = tmp_path_factory.mktemp("sampling")
    flow_b = {**FLOW, "train": {**FLOW["train"], "seed": 1}}
    cond0 = {**FLOW, "train": TRAIN, "sample": {**FLOW["sample"], "guidance": 1.0}}
    with roots(root):
        for name, config in (("flow", FLOW), ("flow_b", flow_b), ("cond0", cond0), ("ddpm", DDPM)):
            write_experiment(root, name, config)
            assert train(load_experiment(name), log_fn=lambda *_: None).status == "finished"
        yield root


def error_line(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def written(root, name: str) -> set[str]:
    return {p.relative_to(root / "experiments" / name).as_posix()
            for sub in ("samples", "eval") for p in (root / "experiments" / name / sub).glob("*")}


@pytest.mark.parametrize("command", [["sample"], ["eval", "--n", "4"]])
@pytest.mark.parametrize("name,overrides,words", [
    # the audit's case: the YAML says ddpm, the checkpoint is flow matching -> pure noise with exit 0
    ("flow", ["diffusion.objective=ddpm", "sample.sampler=ddim", "sample.steps=20"],
     ["diffusion.objective=flow", "sample.sampler=ddim", "euler, heun or flow_dpmpp2m"]),
    ("ddpm", ["diffusion.objective=flow", "sample.sampler=heun"],
     ["diffusion.objective=ddpm", "ddpm, ddim or dpmpp2m"]),
    ("ddpm", ["model.arch=unet", "model.channels=[8,16]", "model.conditioning=embedding", "sample.guidance=3",
              "train.label_dropout=0.1"], ["model.conditioning=none", "sample.guidance"]),
    # conditional, but trained without label dropout: the YAML's label_dropout now says 0.1, the checkpoint's 0
    ("cond0", ["sample.guidance=3", "train.label_dropout=0.1"], ["train.label_dropout=0", "sample.guidance=3"]),
    ("ddpm", ["diffusion.T=100", "sample.steps=50"], ["diffusion.T=20", "sample.steps=50"]),
])
def test_sampler_settings_must_fit_the_trained_checkpoint(lab, capsys, command, name, overrides, words):
    before = written(lab, name)
    line = error_line(capsys, command[0], name, *overrides, *command[1:])
    for word in words:
        assert word in line, line
    assert f"checkpoints/{name}/step-000000004.safetensors" in line
    assert written(lab, name) == before  # refused before sampling: nothing written
    assert not (lab / "checkpoints" / "_classifiers").exists()  # nor an eval classifier trained


def test_the_image_count_is_in_the_tag_so_small_grids_never_replace_big_ones(lab, capsys):
    samples = lab / "experiments" / "flow" / "samples"
    assert main(["sample", "flow"]) == 0
    big = {ext: (samples / f"{GRID}{ext}").read_bytes() for ext in (".png", ".safetensors", ".json")}
    assert main(["sample", "flow", "sample.per_class=1"]) == 0
    small = "step0000004-euler2-w2-n10-seed1234"
    assert json.loads((samples / f"{small}.json").read_text())["images"] == 10
    assert {ext: (samples / f"{GRID}{ext}").read_bytes() for ext in big} == big
    assert json.loads(big[".json"])["images"] == 20
    assert main(["sample", "flow"]) == 0  # the same checkpoint and settings again: the same grid, rewritten
    assert (samples / f"{GRID}.safetensors").read_bytes() == big[".safetensors"]
    capsys.readouterr()


def test_samples_of_another_checkpoint_are_never_replaced(lab, capsys):
    """flow_b's checkpoint sampled with flow's settings gives the same tag: refused, the files kept."""
    samples = lab / "experiments" / "flow" / "samples"
    assert main(["sample", "flow"]) == 0
    before = {p.name: p.read_bytes() for p in samples.glob(f"{GRID}*")}
    other = lab / "checkpoints" / "flow_b" / "step-000000004.safetensors"
    line = error_line(capsys, "sample", "flow", f"sample.checkpoint={other}")
    assert "another checkpoint" in line and str(other) in line and f"move {GRID}.* away" in line
    assert {p.name: p.read_bytes() for p in samples.glob(f"{GRID}*")} == before


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_a_grid_records_the_precision_it_was_sampled_in(lab, precision):
    """train.precision (here explicit; auto goes by the hardware, as in training) sets sampling's autocast."""
    with roots(lab):
        assert main(["sample", "ddpm", f"train.precision={precision}", "sample.seed=77"]) == 0
    info = json.loads((lab / "experiments" / "ddpm" / "samples" / "step0000004-ddim2-n4-seed77.json").read_text())
    assert info["precision"] == precision


def test_sample_tag_format():
    flow = build_experiment("t", {**FLOW, "sample": {**FLOW["sample"], "per_class": 3}}, "test")
    assert sample_tag(1500, flow, True) == "step0001500-euler2-w2-n30-seed1234"  # the grid's count by default
    assert sample_tag(1500, flow, True, 1000) == "step0001500-euler2-w2-n1000-seed1234"
    ddim = build_experiment("t", {**DDPM, "sample": {"sampler": "ddim", "steps": 5, "eta": 0.5, "n": 16}}, "test")
    assert sample_tag(7, ddim, False) == "step0000007-ddim5-eta0.5-n16-seed1234"
