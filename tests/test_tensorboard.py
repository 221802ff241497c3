"""``train.tensorboard: true``: real event files, read back with TensorBoard's own EventAccumulator; a resumed run
shows each step once; without the package, one line before any training."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from _train_helpers import TINY, metrics_lines, roots
from ddpm_hpc.cli import main as cli_main
from ddpm_hpc.config import build_experiment

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="train.tensorboard needs the tensorboard package (pip install -e '.[test]' installs it)")

CONFIG = {**TINY, "train": {**TINY["train"], "steps": 12, "log_every": 2, "checkpoint_every": 4,
                            "tensorboard": True}, "sample": {"every": 6}}


def experiment(**train):
    data = json.loads(json.dumps(CONFIG))
    data["train"].update(train)
    return build_experiment("tb", data, "test")


def events(root):
    """Every scalar and image in experiments/tb/tensorboard/, as TensorBoard itself reads the folder."""
    acc = event_accumulator.EventAccumulator(str(root / "experiments" / "tb" / "tensorboard"),
                                             size_guidance={event_accumulator.SCALARS: 0,
                                                            event_accumulator.IMAGES: 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    images = {tag: [(e.step, e.width, e.height) for e in acc.Images(tag)] for tag in acc.Tags()["images"]}
    return scalars, images


def test_scalars_and_previews_match_metrics_and_survive_a_rewind(tmp_path):
    from ddpm_hpc.pipeline import run_training

    with roots(tmp_path):
        assert run_training(experiment(steps=8), log_fn=lambda _: None).status == "finished"
        scalars, images = events(tmp_path)
        metrics = metrics_lines(tmp_path, "tb", timing=True)
        assert [r["step"] for r in metrics] == [2, 4, 6, 8]
        for key in ("loss", "loss_smooth", "img_per_s"):
            assert scalars[f"train/{key}"] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in metrics], key
        assert [step for step, _, _ in images["samples/preview"]] == [6]  # sample.every=6
        assert images["samples/preview"][0][1] > 0

        # Go on to 12, then rewind to the checkpoint at step 8 as if the steps after it had been lost: the
        # events of steps 10 and 12 are written twice (two processes), TensorBoard shows each step once.
        assert run_training(experiment(), log_fn=lambda _: None).status == "finished"
        ckpts = tmp_path / "checkpoints" / "tb"
        (ckpts / "step-000000012.safetensors").unlink()
        pointer = json.loads((ckpts / "latest.json").read_text())
        (ckpts / "latest.json").write_text(json.dumps({**pointer, "file": "step-000000008.safetensors", "step": 8}))
        assert run_training(experiment(), log_fn=lambda _: None).status == "finished"
        assert len(list((tmp_path / "experiments" / "tb" / "tensorboard").glob("events.out.tfevents.*"))) == 3
        scalars, images = events(tmp_path)
        metrics = metrics_lines(tmp_path, "tb", timing=True)
        assert [r["step"] for r in metrics] == [2, 4, 6, 8, 10, 12]
        for key in ("loss", "loss_smooth", "img_per_s"):
            assert scalars[f"train/{key}"] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in metrics], key
        assert [step for step, _, _ in images["samples/preview"]] == [6, 12]


def test_without_the_package_one_line_and_no_training(tmp_path, monkeypatch, capsys):
    """This machine has tensorboard; its absence is simulated by blocking the import (sys.modules entry None)."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "tb.yaml").write_text(yaml.safe_dump(CONFIG))
    with roots(tmp_path):
        assert cli_main(["train", "tb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.tensorboard needs `pip install ddpm-hpc[tensorboard]`" in err, err
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "experiments" / "tb").exists()
