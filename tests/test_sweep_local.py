"""``ddpm-hpc sweep-local`` (make sweep-local): members trained and sampled one after another, continuing where
the last call stopped; bad sweeps are one line, exit code 2, and leave nothing on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddpm_hpc.cli import main

TINY = """\
description: "tiny"
data: {dataset: digits, batch_size: 16}
model: {arch: conv}
diffusion: {objective: ddpm, T: 20}
train: {steps: 10, log_every: 5, checkpoint_every: 5, device: cpu}
sample: {sampler: ddim, steps: 3, n: 4, trajectory: false}
"""
MEMBERS = ["tiny-sweep-lr1e-3", "tiny-sweep-lr2e-3"]


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    exps = tmp_path / "experiments"
    (exps / "sweeps").mkdir(parents=True)
    (exps / "tiny.yaml").write_text(TINY)
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(exps))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    return tmp_path


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_sweep_local_trains_samples_and_continues(root, capsys):
    grid = ["sweep-local", "--base", "tiny", "--grid", "train.lr=1e-3,2e-3"]
    assert main([*grid, "train.steps=5"]) == 0
    for member in MEMBERS:
        assert json.loads((root / "checkpoints" / member / "latest.json").read_text())["step"] == 5
        assert list((root / "experiments" / member / "samples").glob("step0000005-ddim3-*.png"))
    record = json.loads((root / "experiments" / "tiny-sweep" / "sweep.json").read_text())
    assert [m["name"] for m in record["members"]] == MEMBERS
    assert (root / "experiments" / "tiny-sweep" / "index.html").is_file()  # the comparison page
    capsys.readouterr()
    # more steps: each member resumes from its checkpoint, then samples the new final step
    assert main([*grid, "train.steps=10"]) == 0
    out = capsys.readouterr().out
    assert out.count("resuming tiny-sweep-lr") == 2 and "(step 5/10)" in out, out
    for member in MEMBERS:
        assert list((root / "experiments" / member / "samples").glob("step0000010-ddim3-*.png"))
    # again: nothing left to do
    assert main([*grid, "train.steps=10"]) == 0
    out = capsys.readouterr().out
    assert f"[1/2] {MEMBERS[0]}: done" in out and f"[2/2] {MEMBERS[1]}: done" in out and "training" not in out


@pytest.mark.parametrize("args, message", [
    (["--base", "tiny", "--grid", "train.lrr=1e-3,2e-3"], "unknown key 'train.lrr'; did you mean 'train.lr'?"),
    (["--base", "tiny"], "an empty grid"),
    (["--base", "tiny", "--grid", "train.lr=1e-3,-1"], "member tiny-sweep-lr-1: train.lr: -1"),
    (["--base", "tiny", "--grid", "train.lr=1e-3,0.001"], "two members get the name 'tiny-sweep-lr1e-3'"),
    (["--base", "tnyi", "--grid", "train.lr=1,2"], "no experiment 'tnyi'"),
    (["nosuch"], "no sweep 'nosuch'"),
    (["--grid", "train.lr=1,2"], "which sweep?"),
])
def test_bad_sweep_is_one_line_exit_2_and_nothing_on_disk(root, capsys, args, message):
    before = listing(root)
    assert main(["sweep-local", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert listing(root) == before


def test_array_records_cover_tasks_that_never_started():
    """sacct has no row for an array task that never started; jobs.slurm reads the covering range instead."""
    from jobs.slurm import _ARRAY_RECORD, _indices

    assert _indices("1-3,7%2") == {1, 2, 3, 7} and _indices("4") == {4}
    assert _ARRAY_RECORD.match("123_[1-3,7%2]").groups() == ("123", "1-3,7%2")
    assert _ARRAY_RECORD.match("123").groups() == ("123", None) and not _ARRAY_RECORD.match("123_4")


def test_list_validates_and_writes_nothing(root, capsys):
    before = listing(root)
    assert main(["sweep-local", "--base", "tiny", "--grid", "train.lr=1e-3,2e-3", "--seeds", "2", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in out[:4]] == ["tiny-sweep-lr1e-3-seed0", "tiny-sweep-lr1e-3-seed1",
                                                 "tiny-sweep-lr2e-3-seed0", "tiny-sweep-lr2e-3-seed1"]
    assert out[1].split()[1:] == ["train.lr=1e-3", "seed=1"] and "4 members of tiny, all valid" in out[4]
    assert listing(root) == before
