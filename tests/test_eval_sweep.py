"""``ddpm-hpc eval-sweep`` end to end on the embedded digits: a tiny conditional flow model trained here, a 2x2 grid
of sample settings scored from its one checkpoint, the table, the frontier plot (loaded in headless Chromium), reuse
of scored points, and invalid points refused before anything runs.

The digits are 8x8 images scaled up, on which every setting of a trained model scores ~100 %: these tests check the
machinery, never the quality numbers."""

from __future__ import annotations

import json
import shutil

import pytest

from ddpm_hpc.cli import main
from ddpm_hpc.metrics import classifier

from test_report import image_status, needs_chromium, parse

TINY = """description: tiny conditional flow model for the eval-sweep test
data: {dataset: digits, batch_size: 8}
model: {arch: unet, channels: [8, 16], conditioning: embedding, time_embedding: true, norm: group}
diffusion: {objective: flow}
train: {steps: 6, lr: 0.001, ema_decay: 0.9, label_dropout: 0.1, log_every: 3, checkpoint_every: 6, device: cpu}
sample: {sampler: euler, steps: 3, guidance: 2.0, per_class: 1, batch_size: 64}
"""
GRID = ["sample.guidance=1,2", "sample.steps=2,3"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A trained tiny experiment and a (briefly trained) digits classifier in fresh roots."""
    from ddpm_hpc.config import load_experiment
    from ddpm_hpc.trainer import train

    root = tmp_path_factory.mktemp("eval_sweep")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("EXPERIMENTS", "CHECKPOINTS", "DATA"):
            mp.setenv(f"DDPM_HPC_{name}", str(root / name.lower()))
        mp.delenv("DDPM_HPC_FID_WEIGHTS", raising=False)
        (root / "experiments").mkdir()
        (root / "experiments" / "tiny.yaml").write_text(TINY)
        classifier.train_classifier("digits", steps=60, log_fn=lambda *_: None)
        assert train(load_experiment("tiny"), log_fn=lambda *_: None).status == "finished"
        yield root


def _tables(root):
    return sorted((root / "experiments" / "tiny" / "eval").glob("sweep-*.json"))


def test_a_2x2_sweep_writes_its_table_and_plot_and_reuses_points(lab, capsys):
    assert main(["eval-sweep", "tiny", "--grid", *GRID, "--n", "20"]) == 0
    out = capsys.readouterr().out
    tables = _tables(lab)
    assert len(tables) == 1 and tables[0].name.startswith("sweep-step0000006-n20-")
    table = json.loads(tables[0].read_text())
    assert table["complete"] and table["step"] == 6 and table["n"] == 20
    assert table["grid"] == {"sample.guidance": [1, 2], "sample.steps": [2, 3]}
    points = table["points"]
    # the experiment's own settings (euler, 3 steps, guidance 2) are a grid point: marked, not added
    assert [p["point"] for p in points] == [{"sample.guidance": g, "sample.steps": s} for g in (1, 2) for s in (2, 3)]
    assert [p["default"] for p in points] == [False, False, False, True]
    assert [p["nfe_per_image"] for p in points] == [2, 3, 4, 6]  # euler: steps; guidance's two branches count
    for p in points:
        assert 0 <= p["conditional_accuracy"] <= 1 and p["seconds"] > 0 and p["reused_from"] is None
        assert p["classifier_fd_floor"] > 0 and p["classifier_fd_ratio"] == pytest.approx(
            p["classifier_fd"] / p["classifier_fd_floor"], rel=1e-3)
        assert p["fid"] is None  # no Inception weights here
    assert table["floor"]["floor_images"] == 20 and table["floor"]["floor_class_counts"] == [2] * 10
    for i in range(1, 5):  # progress per point
        assert f"[{i}/4] sample.guidance=" in out
    png = tables[0].with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and table["plot"] == png.name
    page = lab / "experiments" / "tiny" / "index.html"
    assert f"eval/{png.name}" in " ".join(parse(page).srcs)

    # the same sweep again: every point reused (same settings, checkpoint and N), the table the same numbers
    assert main(["eval-sweep", "tiny", "--grid", *GRID, "--n", "20"]) == 0
    assert capsys.readouterr().out.count("scored before, reused from") == 4
    again = json.loads(tables[0].read_text())
    assert [p["reused_from"] for p in again["points"]] == [tables[0].name] * 4
    assert [p["classifier_fd"] for p in again["points"]] == [p["classifier_fd"] for p in points]
    # another grid overlapping it reuses the overlap only; --force scores everything again
    assert main(["eval-sweep", "tiny", "--grid", "sample.guidance=2,3", "sample.steps=3", "--n", "20"]) == 0
    assert capsys.readouterr().out.count("reused from") == 1
    assert main(["eval-sweep", "tiny", "--grid", *GRID, "--n", "20", "--force"]) == 0
    assert "reused" not in capsys.readouterr().out


@needs_chromium
def test_the_frontier_plot_loads_in_chromium(lab, tmp_path):
    if not _tables(lab):
        assert main(["eval-sweep", "tiny", "--grid", *GRID, "--n", "20"]) == 0
    page = lab / "experiments" / "tiny" / "index.html"
    status, loaded = image_status(page, tmp_path / "profile")
    total = len(parse(page).srcs)
    assert status == f"{total}/{total}" and loaded == ["yes"] * total, (status, loaded)
    sweep_imgs = [s for s in parse(page).srcs if "eval/sweep-" in s]
    assert sweep_imgs
    # control: without the PNG the same check fails
    copy = tmp_path / "copy"
    shutil.copytree(page.parent, copy)
    for png in (copy / "eval").glob("sweep-*.png"):
        png.unlink()
    status, _ = image_status(copy / "index.html", tmp_path / "profile")
    ok, total = map(int, status.split("/"))
    assert ok == total - len(sweep_imgs)


@pytest.mark.parametrize("grid,named", [
    (["sample.sampler=euler,ddpm"], "sample.sampler=ddpm"),  # a DDPM sampler for a flow model
    (["sample.guidance=1,2", "sample.eta=-1"], "sample.eta"),  # a value the config refuses
    (["train.lr=0.1,0.2"], "train.lr cannot vary here"),
    (["sample.stpes=2,3"], "did you mean 'sample.steps'"),
])
def test_invalid_points_are_refused_before_anything_runs(lab, capsys, monkeypatch, grid, named):
    from ddpm_hpc.metrics import eval_sweep

    monkeypatch.setattr(eval_sweep, "sample_images", lambda *a, **k: pytest.fail("sampled before refusing"))
    monkeypatch.setattr(eval_sweep, "make_scorer", lambda *a, **k: pytest.fail("scored before refusing"))
    before = _tables(lab)
    assert main(["eval-sweep", "tiny", "--grid", *grid, "--n", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and named in err, err
    assert _tables(lab) == before
