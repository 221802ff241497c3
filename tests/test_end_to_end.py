"""End to end, through the command line in this process: train the demo-like experiment on the embedded digits
until the loss has clearly fallen, then sample it; and run every preset for two steps on generated data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from jobs.cli import main
from ddpm_hpc.config import load_experiment

REPO_EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
PRESETS = sorted(p.stem for p in REPO_EXPERIMENTS.glob("*.yaml") if not p.stem.startswith("_"))




@pytest.fixture
def roots(tmp_path, monkeypatch) -> dict[str, Path]:
    """Experiments and checkpoints in tmp_path; the repository's experiment files (and cluster defaults) copied."""
    experiments, checkpoints = tmp_path / "experiments", tmp_path / "checkpoints"
    experiments.mkdir()
    for path in REPO_EXPERIMENTS.glob("*.yaml"):
        shutil.copy(path, experiments / path.name)
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(experiments))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(checkpoints))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    return {"experiments": experiments, "checkpoints": checkpoints}


def grid_size(n: int, nrow: int, padding: int = 2, size: int = 32) -> tuple[int, int]:
    """(width, height) of torchvision's make_grid of n images with nrow per row."""
    cols = min(nrow, n)
    rows = -(-n // cols)
    return cols * (size + padding) + padding, rows * (size + padding) + padding


def check_png(path: Path, size: tuple[int, int] | None, modes=("RGB",)) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode in modes, (path, image.mode)
        assert size is None or image.size == size, (path, image.size)


def check_samples(folder: Path, n: int, nrow: int, conditional: bool) -> dict:
    pngs = [p for p in folder.glob("*.png") if not p.name.endswith("-trajectory.png")
            and not p.name.startswith("preview-")]
    assert len(pngs) == 1, sorted(folder.iterdir())
    png = pngs[0]
    check_png(png, grid_size(n, nrow))
    tensors = load_file(png.with_suffix(".safetensors"))
    assert tensors["images"].shape == (n, 3, 32, 32) and tensors["images"].dtype == torch.uint8
    if conditional:
        assert torch.equal(tensors["labels"], torch.arange(10).repeat_interleave(n // 10))
    else:
        assert "labels" not in tensors
    info = json.loads(png.with_suffix(".json").read_text())
    assert info["images"] == n
    assert (folder / info["trajectory"]).is_file()
    return info


def test_demo_trains_and_samples(roots, capsys):
    steps, log_every = 200, 25
    overrides = [f"train.steps={steps}", f"train.log_every={log_every}", "train.checkpoint_every=100",
                 "model.channels=[16,32,32]", "train.device=cpu", "sample.per_class=2", "sample.steps=4"]
    assert main(["train", "demo", *overrides]) == 0
    out = roots["experiments"] / "demo"

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(log_every, steps + 1, log_every))
    first, last = records[0]["loss"], records[-1]["loss"]  # mean loss of the first and last logged windows
    assert last < 0.6 * first, [round(r["loss"], 3) for r in records]
    assert records[-1]["loss_smooth"] < records[0]["loss_smooth"]

    ckpt_dir = roots["checkpoints"] / "demo"
    pointer = json.loads((ckpt_dir / "latest.json").read_text())
    assert pointer["step"] == steps and (ckpt_dir / pointer["file"]).is_file()
    assert (ckpt_dir / "step-000000100.safetensors").is_file()
    check_png(out / "loss.png", None, modes=("RGB", "RGBA"))  # matplotlib's
    check_png(out / "forward_process.png", grid_size(40, 10))  # rows x, x_t, eps, eps-hat of 10 images

    assert main(["sample", "demo", *overrides]) == 0
    info = check_samples(out / "samples", 20, 2, conditional=True)
    assert info["step"] == steps and info["weights"] == "ema" and info["sampler"] == "heun"
    assert info["nfe_per_image"] == (2 * 4 - 1) * 2  # Heun, 4 steps, doubled by guidance
    images = load_file(out / "samples" / f"{Path(info['trajectory']).name[:-len('-trajectory.png')]}.safetensors")
    assert images["images"].float().std() > 10  # not a blank grid
    capsys.readouterr()


def preset_overrides(name: str) -> list[str]:
    exp = load_experiment(name)
    flow = exp.diffusion.objective == "flow"
    overrides = ["train.steps=2", "train.device=cpu", "sample.per_class=1", "sample.n=4", "sample.every=0"]
    if exp.data.batch_size > 16:  # cifar_best's 128 would make two steps of its 10M U-Net a slow test on a CPU
        overrides += ["data.batch_size=16"]
    if flow:
        overrides += ["sample.steps=2"]
    elif name != "mnist_conv_2k":  # the tiny conv net can afford all T ancestral steps: keep one ddpm run
        overrides += ["sample.sampler=ddim", "sample.steps=2"]
    return overrides


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_runs_two_steps(name, roots, mnist_root, cifar10_root, capsys):
    overrides = preset_overrides(name)
    assert main(["train", name, *overrides]) == 0
    assert main(["sample", name, *overrides]) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err.lower(), captured.err
    out = roots["experiments"] / name
    pointer = json.loads((roots["checkpoints"] / name / "latest.json").read_text())
    assert pointer["step"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    check_png(out / "forward_process.png", grid_size(40, 10))
    conditional = load_experiment(name).model.conditioning != "none"
    info = check_samples(out / "samples", 10 if conditional else 4, 1 if conditional else 2, conditional)
    assert info["step"] == 2
