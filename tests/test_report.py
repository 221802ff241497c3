"""The static report: train a tiny experiment, sample it with two samplers, render the pages and open them in a real
headless Chromium (Debian's ``chromium``, installed by ``.ci/run``) to check that every image loads."""

from __future__ import annotations

import json
import time
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ddpm_hpc import report
from jobs.cli import main as cli_main
from ddpm_hpc.config import build_experiment
from helpers import chromium, image_status, needs_chromium, parse

TINY = {
    "description": "tiny report test",
    "data": {"dataset": "digits", "batch_size": 16},
    "model": {"arch": "unet", "channels": [8, 16, 16], "conditioning": "embedding", "time_embedding": True,
              "norm": "group"},
    "diffusion": {"objective": "flow"},
    "train": {"steps": 30, "lr": 1e-3, "ema_decay": 0.9, "label_dropout": 0.1, "log_every": 5,
              "checkpoint_every": 10, "checkpoint_minutes": 0, "device": "cpu"},
    "sample": {"sampler": "euler", "steps": 4, "per_class": 2, "every": 15},
}
EULER = "step0000030-euler4-n20-seed1234"
HEUN = "step0000030-heun3-w2-n20-seed1234"


def experiment(**sample):
    data = json.loads(json.dumps(TINY))
    data["sample"].update(sample)
    return build_experiment("tiny", data, "test")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train 30 steps (checkpoints at 10, 20, 30; previews at 15, 30), then sample with euler and with heun."""
    from ddpm_hpc.pipeline import run_sampling, run_training

    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDPM_HPC_EXPERIMENTS", str(root / "experiments"))
        mp.setenv("DDPM_HPC_CHECKPOINTS", str(root / "checkpoints"))
        outcome = run_training(experiment(), log_fn=lambda _: None)
        assert outcome.status == "finished" and outcome.step == 30
        run_sampling(experiment(), log_fn=lambda _: None)
        run_sampling(experiment(sampler="heun", steps=3, guidance=2.0), log_fn=lambda _: None)
        yield root, mp


def local_target(page: Path, url: str) -> Path:
    parts = urlsplit(url)
    assert not parts.scheme and not parts.netloc and not parts.path.startswith("/"), f"not relative: {url}"
    return page.parent / unquote(parts.path)


def test_hooks_render_pages_with_relative_images(run):
    root, _ = run
    page = root / "experiments" / "tiny" / "index.html"
    assert page.is_file() and (root / "experiments" / "index.html").is_file()  # written by the hooks alone
    text = page.read_text()
    for needle in (EULER, HEUN, "30 / 30", "finished", "step-000000030.safetensors", "heun", "euler", "nfe_per_image",
                   "Previews during training", "tiny report test"):
        assert needle in text, needle
    parsed = parse(page)
    assert not parsed.scripts, "no external scripts or stylesheets"
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "no network links"
    srcs = {unquote(urlsplit(s).path) for s in parsed.srcs}
    assert {"loss.png", "forward_process.png", f"samples/{EULER}.png", f"samples/{HEUN}.png",
            f"samples/{EULER}-trajectory.png", "samples/preview-step0000015-euler20-n20-seed1234.png"} <= srcs
    for url in parsed.srcs + [h for h in parsed.links if not h.endswith("/")]:
        assert local_target(page, url).is_file(), url
    # grids by step, the newest step first; the metadata comes from <tag>.json
    assert text.index(EULER) < text.index("Previews during training")
    snapshot = json.loads((page.parent / "report.json").read_text())
    assert snapshot["steps_done"] == 30 and snapshot["checkpoint"]["step"] == 30
    assert {s["tag"] for s in snapshot["samples"] if not s["preview"]} == {EULER, HEUN}


def test_jobs_eval_and_cli(run, capsys):
    root, _ = run
    folder = root / "experiments" / "tiny"
    # jobs.json as jobs/registry.py writes it, and the events the jobs append themselves
    (folder / "jobs.json").write_text(json.dumps({"experiment": "tiny", "jobs": [
        {"kind": "train", "job_id": "4240", "submitted_at": "2025-01-01T09:00:00", "cancelled_at": "2025-01-01T09:05"},
        {"kind": "train", "job_id": "4241", "submitted_at": "2025-01-01T09:10:00", "overrides": ["train.steps=30"]},
        {"kind": "train", "job_id": "4242", "submitted_at": "2025-01-01T10:00:00"},
        {"kind": "sample", "job_id": "4243", "submitted": "2025-01-01T11:00:00", "state": "COMPLETED"},
        {"kind": "sample", "job_id": "4244", "submitted_at": "2025-01-01T12:00:00"}]}))
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "logs" / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
        {"time": "t1", "job_id": "4241", "kind": "train", "event": "start"},
        {"time": "t2", "job_id": "4241", "kind": "train", "event": "failed", "message": "CUDA out of memory"},
        {"time": "t3", "job_id": "4242", "kind": "train", "event": "start"},
        {"time": "t4", "job_id": "4242", "kind": "train", "event": "finished"}]) + "{half a line")
    (folder / "eval").mkdir(exist_ok=True)
    (folder / "eval" / "fid.json").write_text(json.dumps({"fid": 12.345, "n": 1000, "per_class": {"0": 1.5}}))
    (folder / "eval" / "broken.json").write_text("{not json")  # tolerated, not shown
    try:
        assert cli_main(["report", "all"]) == 0
        assert "index.html" in capsys.readouterr().out
        text = (folder / "index.html").read_text()
        jobs = {m[0]: m[1] for m in re.findall(r"<code>(\d+)</code></td><td><span class=\"badge \w+\">(\w+)<", text)}
        assert jobs == {"4240": "CANCELLED", "4241": "FAILED", "4242": "COMPLETED", "4243": "COMPLETED",
                        "4244": "unknown"}
        for needle in ("CUDA out of memory", "train.steps=30", "fid.json", "12.345", "per_class.0"):
            assert needle in text, needle
        assert "broken.json" not in text
        top = (root / "experiments" / "index.html").read_text()
        assert 'href="tiny/index.html"' in top and "sample 4244: unknown" in top
        assert cli_main(["report", "no_such_experiment"]) == 2
    finally:
        (folder / "jobs.json").unlink()
        shutil.rmtree(folder / "eval")
        shutil.rmtree(folder / "logs")
        report.render("all")


def test_job_states_from_sacct_then_from_the_snapshot(tmp_path, monkeypatch):
    """On the cluster sacct gives the states; the index and a page re-rendered without sacct reuse them."""
    folder = tmp_path / "experiments" / "x"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": {"steps": 100}}))
    (folder / "jobs.json").write_text(json.dumps({"jobs": [{"kind": "train", "job_id": "77"},
                                                           {"kind": "sample", "job_id": "78"}]}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sacct = bin_dir / "sacct"
    sacct.write_text("#!/bin/sh\necho '77|RUNNING'\necho '78|CANCELLED by 1000'\n")
    sacct.chmod(0o755)
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path / "experiments"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    report.render("x")
    states = {j["job_id"]: (j["state"], j["state_source"]) for j in
              json.loads((folder / "report.json").read_text())["jobs"]}
    assert states == {"77": ("RUNNING", "sacct"), "78": ("CANCELLED", "sacct")}
    assert "train 77: RUNNING" in (tmp_path / "experiments" / "index.html").read_text()
    sacct.unlink()  # e.g. re-rendered on a laptop after make pull
    text = report.render_experiment("x").read_text()
    assert "RUNNING" in text and "last seen" in text


def test_a_part_trained_run_is_in_progress_only_while_something_runs_it(tmp_path, monkeypatch):
    """No live job and no metrics line for a while (a local run that was killed): "stopped", not "in progress"."""
    folder = tmp_path / "experiments" / "x"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": {"steps": 100}}))
    metrics = folder / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 40, "loss": 0.2, "loss_smooth": 0.2}) + "\n")
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path / "experiments"))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    assert report.collect("x")["status"] == "in progress"  # just written: a local run is at it
    an_hour_ago = time.time() - 3600
    os.utime(metrics, (an_hour_ago, an_hour_ago))
    assert report.collect("x")["status"] == "stopped"
    (folder / "jobs.json").write_text(json.dumps({"jobs": [{"kind": "train", "job_id": "77", "state": "PENDING"}]}))
    assert report.collect("x")["status"] == "in progress"  # queued again: a job will resume it
    os.utime(metrics)  # just written, but by a job that is over now: the jobs know better than the clock
    (folder / "jobs.json").write_text(json.dumps({"jobs": [
        {"kind": "train", "job_id": "77", "state": "CANCELLED by 0"},
        {"kind": "sample", "job_id": "78", "state": "CANCELLED by 0"}]}))
    assert report.collect("x")["status"] == "stopped"


def test_a_job_that_failed_before_training_shows_what_was_submitted(tmp_path, monkeypatch):
    """No config.json yet (the job failed at start, e.g. no dataset on the node): the page shows the submitted
    config and the status "failed"; the index names the newest job of each kind."""
    root = tmp_path / "experiments"
    folder = root / "m"
    folder.mkdir(parents=True)
    (root / "m.yaml").write_text("train: {steps: 2000}\n")
    (folder / "submitted_config.yaml").write_text("# as submitted\ntrain: {steps: 200, device: cpu}\n")
    (folder / "jobs.json").write_text(json.dumps({"jobs": [
        {"kind": "train", "job_id": "90", "state": "CANCELLED"}, {"kind": "sample", "job_id": "91"},
        {"kind": "train", "job_id": "92", "state": "FAILED"}, {"kind": "sample", "job_id": "93", "state": "PENDING"}]}))
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(root))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    d = report.collect("m")
    assert (d["status"], d["steps_total"], d["config"]["train"]["device"]) == ("failed", 200, "cpu")
    report.render("m")
    index = (root / "index.html").read_text()
    assert "train 92: FAILED, sample 93: PENDING" in index and "train 90" not in index


def test_rendered_after_pull_without_checkpoints(run, tmp_path, monkeypatch):
    """On a laptop the checkpoints are usually not pulled: the page still names the last one (from report.json)."""
    root, _ = run
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "none"))
    text = report.render_experiment("tiny").read_text()
    assert "step-000000030.safetensors" in text and "not on this machine" in text and "CKPT=1" in text
    snapshot = root / "experiments" / "tiny" / "report.json"
    seen = json.loads(snapshot.read_text())["checkpoint"]["as_of"]  # when the cluster's page was rendered
    snapshot.write_text(json.dumps({**json.loads(snapshot.read_text()), "rendered": "a later laptop render"}))
    report.render_experiment("tiny")
    assert json.loads(snapshot.read_text())["checkpoint"]["as_of"] == seen
    monkeypatch.undo()
    assert "not on this machine" not in report.render_experiment("tiny").read_text()


def test_checkpoints_here_without_latest_json(run):
    """latest.json lost: the page names the newest step file on disk, not 'not on this machine'."""
    root, _ = run
    pointer = root / "checkpoints" / "tiny" / "latest.json"
    saved = pointer.read_bytes()
    pointer.unlink()
    try:
        text = report.render_experiment("tiny").read_text()
        assert "step 30 — " in text and "step-000000030.safetensors" in text and "not on this machine" not in text
    finally:
        pointer.write_bytes(saved)


def test_report_does_not_import_torch(run):
    """Pages are rendered from plain files (also by make pull on a laptop): torch is not needed, nor loaded."""
    root, _ = run
    code = ("import sys; from ddpm_hpc import report; report.render('all'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "DDPM_HPC_EXPERIMENTS": str(root / "experiments"),
           "DDPM_HPC_CHECKPOINTS": str(root / "checkpoints")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_failed_write_leaves_no_temporary_file(run, monkeypatch):
    root, _ = run

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    messages = []
    assert report.refresh("tiny", messages.append) is None and "No space left" in messages[0]
    leftovers = [p.name for p in (root / "experiments").rglob("*.tmp-*")]
    assert not leftovers


def test_refresh_never_raises(run, monkeypatch):
    messages = []

    def boom(name):
        raise OSError("disk full")

    monkeypatch.setattr(report, "render_experiment", boom)
    assert report.refresh("tiny", messages.append) is None
    assert messages and "disk full" in messages[0]


@needs_chromium
def test_chromium_loads_every_image_and_screenshots(run, tmp_path):
    root, _ = run
    exp_page = root / "experiments" / "tiny" / "index.html"
    status, loaded = image_status(exp_page, tmp_path / "profile")
    total = len(parse(exp_page).srcs)
    assert total >= 8 and status == f"{total}/{total}" and loaded == ["yes"] * total, (status, loaded)

    status, loaded = image_status(root / "experiments" / "index.html", tmp_path / "profile")
    assert status == "1/1" and loaded == ["yes"]

    shot = tmp_path / "report.png"
    out = chromium([f"--screenshot={shot}", "--window-size=1280,2000", exp_page.as_uri()], tmp_path / "profile")
    assert out.returncode == 0, out.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1280, 2000)


@needs_chromium
def test_chromium_check_detects_a_missing_image(run, tmp_path):
    """Control for the check above: a pulled folder missing one PNG shows as not loaded (and marked on the page)."""
    root, _ = run
    copy = tmp_path / "experiments" / "tiny"
    shutil.copytree(root / "experiments" / "tiny", copy)
    (copy / "loss.png").unlink()
    status, loaded = image_status(copy / "index.html", tmp_path / "profile")
    ok, total = map(int, status.split("/"))
    assert ok == total - 1 and loaded.count("no") == 1
