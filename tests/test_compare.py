"""The comparison page (``ddpm-hpc compare``, and a sweep's page): three tiny real runs (two finished and sampled, one
stopped by SIGUSR2 halfway), the page opened from disk in headless Chromium: every image loads, and a click on a
column header reorders the rows."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ddpm_hpc.cli import main as cli_main
from ddpm_hpc.config import build_experiment
from ddpm_hpc.report import compare
from test_report import chromium, image_status, needs_chromium, parse

BASE = {
    "data": {"dataset": "digits", "batch_size": 16},
    "model": {"arch": "unet", "channels": [8, 16, 16], "conditioning": "embedding", "time_embedding": True,
              "norm": "group"},
    "diffusion": {"objective": "flow"},
    "train": {"steps": 20, "lr": 1e-3, "log_every": 5, "checkpoint_every": 10, "checkpoint_minutes": 0,
              "device": "cpu", "precision": "fp32"},
    "sample": {"sampler": "euler", "steps": 4, "per_class": 2, "every": 10},
}
LRS = {"a": 1e-3, "b": 3e-4, "c": 1e-2}


def experiment(name: str, **sample):
    data = json.loads(json.dumps(BASE))
    data["train"]["lr"] = LRS[name]
    data["sample"].update(sample)
    return build_experiment(name, data, "test")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """a, b: 20 steps, previews at 10 and 20, a final grid at 20. c: stopped by SIGUSR2 at step 10 (preview at 10),
    an hour ago (so "stopped", not "in progress")."""
    from ddpm_hpc.pipeline import run_sampling, run_training

    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDPM_HPC_EXPERIMENTS", str(root / "experiments"))
        mp.setenv("DDPM_HPC_CHECKPOINTS", str(root / "checkpoints"))
        mp.setenv("PATH", str(root / "no-slurm-here") + os.pathsep + os.environ["PATH"])
        for name in ("a", "b"):
            assert run_training(experiment(name), log_fn=lambda _: None).status == "finished"
            run_sampling(experiment(name), log_fn=lambda _: None)

        def preempt(run):
            if run.step == 10:
                os.kill(os.getpid(), signal.SIGUSR2)

        outcome = run_training(experiment("c"), log_fn=lambda _: None, after_step=preempt)
        assert (outcome.status, outcome.step) == ("interrupted", 10)
        an_hour_ago = time.time() - 3600
        os.utime(root / "experiments" / "c" / "metrics.jsonl", (an_hour_ago, an_hour_ago))
        # eval results in the format ddpm_hpc.metrics.eval writes (a real eval trains a classifier: too slow here)
        for name, acc, fd in (("a", 0.8, 12.5), ("b", 0.9, 7.25)):
            ev = root / "experiments" / name / "eval"
            ev.mkdir()
            for step, shift in ((10, 100.0), (20, 0.0)):  # the newest step's file is the one compared
                (ev / f"fresh-step{step:07d}-euler4-n100-seed1234.json").write_text(json.dumps({
                    "experiment": name, "n": 100, "step": step, "sampler": "euler", "steps": 4, "weights": "raw",
                    "conditional_accuracy": acc, "classifier_fd": fd + shift, "fid": None}))
        yield root


def losses(root: Path) -> dict[str, float]:
    return {n: json.loads((root / "experiments" / n / "metrics.jsonl").read_text().splitlines()[-1])["loss_smooth"]
            for n in LRS}


def test_page_content_and_files(runs):
    out = runs / "experiments" / "_compare" / "t"
    page = compare.write_comparison(["a", "b", "c"], out)
    assert page == out / "index.html"
    text = page.read_text()
    data = json.loads((out / "comparison.json").read_text())
    members = {m["name"]: m for m in data["members"]}
    assert {n: m["state"] for n, m in members.items()} == {"a": "finished", "b": "finished", "c": "stopped"}
    assert {n: m["steps_done"] for n, m in members.items()} == {"a": 20, "b": 20, "c": 10}
    # only the learning rate differs between the stored configs (names and descriptions never count)
    assert {n: m["varied"] for n, m in members.items()} == {n: {"train.lr": f"{lr:g}"} for n, lr in LRS.items()}
    # c has no eval, so the default metric is the one every member has: the final smoothed loss
    loss = losses(runs)
    assert data["metric"] == "loss" and data["best"] == min(loss, key=loss.get)
    assert re.search(rf'<tr data-name="{data["best"]}" class=best>', text) and text.count("★ best") == 1
    assert members["b"]["values"]["classifier_fd"] == 7.25 and members["c"]["values"]["fid"] is None
    assert members["a"]["compute_unit"].startswith("CPU-h") and members["a"]["values"]["compute_hours"] > 0
    # grids: c only reached step 10, so all three are shown at step 10 (the previews), copied beside the page
    assert data["grid_step"] == 10 and "Samples at step 10" in text
    assert {m["grid"] for m in data["members"]} == {"preview-step0000010-euler20-n20-seed1234"}
    srcs = [unquote(urlsplit(s).path) for s in parse(page).srcs]
    assert sorted(srcs) == sorted(["loss_curves.png"] + [f"grids/{n}--preview-step0000010-euler20-n20-seed1234.png"
                                                         for n in LRS])
    for url in parse(page).srcs + parse(page).links:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not parts.path.startswith("/"), url
        assert (out / unquote(parts.path)).is_file(), url  # member pages too: ../../a/index.html
    assert not parse(page).scripts and not re.search(r"(src|href)=\"(https?:)?//", text)

    # a chosen metric: b has the lower classifier FD (its step-20 eval); c has none and is not ranked
    page = compare.write_comparison(["a", "b", "c"], out, title="lr sweep", metric="classifier_fd",
                                    varied={"a": {"lr": "1e-3"}, "b": {"lr": "3e-4"}, "c": {"lr": "1e-2"}})
    text = page.read_text()
    assert "<h1>lr sweep</h1>" in text and '<tr data-name="b" class=best>' in text
    assert "Not ranked (no value): c" in text
    assert 'data-key="lr"' in text and 'data-key="train.lr"' not in text  # the given columns, verbatim
    assert len(list((out / "grids").iterdir())) == 3
    assert "do not compare like with like" not in text
    # b's newest eval drew fewer images than a's: the page says their metrics do not compare
    other = runs / "experiments" / "b" / "eval" / "fresh-step0000030-euler4-n50-seed1234.json"
    other.write_text(json.dumps({"n": 50, "step": 30, "sampler": "euler", "steps": 4, "weights": "raw",
                                 "conditional_accuracy": 0.5, "classifier_fd": 9.0}))
    try:
        text = compare.write_comparison(["a", "b", "c"], out).read_text()
        assert "newest evals differ in n: their metrics do not compare like with like" in text
    finally:
        other.unlink()


def test_grids_at_the_newest_common_step():
    def s(tag, step, preview=False, mtime=0.0):
        return {"tag": tag, "step": step, "preview": preview, "mtime": mtime}

    a = {"name": "a", "samples": [s("step0000020-heun10-n20-seed1", 20), s("step0000020-euler4-n20-seed1", 20, mtime=9),
                                  s("preview-step0000020-euler20-n20-seed1", 20, True), s("step0000030-x", 30)]}
    b = {"name": "b", "samples": [s("step0000020-heun10-n20-seed1", 20), s("step0000010-heun10-n20-seed1", 10)]}
    none = {"name": "n", "samples": []}
    step, picks = compare.choose_grids([a, b, none])
    assert step == 20 and {n: p["tag"] for n, p in picks.items()} == {
        "a": "step0000020-heun10-n20-seed1", "b": "step0000020-heun10-n20-seed1"}  # the setting both have
    c = {"name": "c", "samples": [s("preview-step0000005-euler20-n20-seed1", 5, True)]}
    step, picks = compare.choose_grids([a, c])
    assert step is None and picks["a"]["tag"] == "step0000030-x" and picks["c"]["step"] == 5


def test_compute_hours_say_which():
    d = {"train_seconds": 7200, "jobs": [{"kind": "train"}],
         "config": {"slurm": {"gpus_per_node": 4, "nodes": 2}, "train": {"device": "auto"}}}
    assert compare._compute(d) == (16.0, "GPU-h (8 GPUs)")
    assert compare._compute({**d, "jobs": []}) == (2.0, "h (local, 1 process, train.device=auto)")
    assert compare._compute({**d, "train_seconds": None}) == (None, "")


def test_varied_values_from_configs():
    cfgs = {"x": {"name": "x", "description": "one", "train": {"lr": 0.001, "steps": 5}, "model": {"ch": [8, 16]}},
            "y": {"name": "y", "description": "two", "train": {"lr": 0.0003, "steps": 5}, "model": {"ch": [8, 32]}}}
    assert compare.varied_from_configs(cfgs) == {"x": {"train.lr": "0.001", "model.ch": "[8,16]"},
                                                 "y": {"train.lr": "0.0003", "model.ch": "[8,32]"}}


def test_cli(runs, monkeypatch, capsys):
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(runs / "experiments"))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(runs / "checkpoints"))
    default = runs / "experiments" / "_compare" / "a+b"
    for args, needle in ((["a", "bb"], "no experiment 'bb'"), (["a", "a"], "'a' is named twice"),
                         (["a", "b", "--metric", "speed"], "unknown --metric 'speed'"),
                         (["a", "../b"], "invalid experiment name")):
        assert cli_main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
        assert not default.exists()  # nothing created
    assert cli_main(["compare", "b", "a", "--metric", "accuracy"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {default / 'index.html'}"  # the same folder in any order
    assert json.loads((default / "comparison.json").read_text())["best"] == "b"
    out = runs / "elsewhere"
    assert cli_main(["compare", "a", "c", "--out", str(out)]) == 0 and (out / "index.html").is_file()


def click(page: Path, keys: list[str], profile: Path) -> list[str]:
    """The row order after clicking the headers ``keys`` in turn: a copy of the page with a script that clicks them
    (real click events on the page's own handlers) once loaded, read back from Chromium's DOM dump."""
    clicks = "".join(f"document.querySelector('th[data-key=\"{k}\"]').click();" for k in keys)
    copy = page.with_name("clicked.html")
    copy.write_text(page.read_text().replace(
        "</body>", f"<script>window.addEventListener('load', function () {{ {clicks} }});</script></body>"))
    out = chromium(["--dump-dom", copy.as_uri()], profile)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'data-sortable="yes"' in out.stdout, "the sort script did not run"
    return re.findall(r'<tr data-name="(\w+)"', out.stdout)


@needs_chromium
def test_chromium_images_load_and_headers_sort(runs, tmp_path):
    page = compare.write_comparison(["a", "b", "c"], runs / "experiments" / "_compare" / "ui", metric="accuracy")
    status, loaded = image_status(page, tmp_path / "profile")
    assert status == "4/4" and loaded == ["yes"] * 4, (status, loaded)
    loss = losses(runs)
    by_loss = sorted(loss, key=loss.get)
    assert click(page, [], tmp_path / "profile") == ["a", "b", "c"]  # as given, without a click
    assert click(page, ["final smoothed loss"], tmp_path / "profile") == by_loss
    assert click(page, ["final smoothed loss", "final smoothed loss"], tmp_path / "profile") == by_loss[::-1]
    # accuracy: c has none and stays last both ways
    assert click(page, ["conditional accuracy"], tmp_path / "profile") == ["a", "b", "c"]
    assert click(page, ["conditional accuracy", "conditional accuracy"], tmp_path / "profile") == ["b", "a", "c"]
    assert click(page, ["state"], tmp_path / "profile")[-1] == "c"  # finished < stopped
