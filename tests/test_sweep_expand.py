"""Sweeps (ddpm_hpc.sweep, ddpm_hpc.sweep_members): grid parsing, expansion (product, variants, seeds), member
names, and validation of every member before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ddpm_hpc.config import load_experiment
from ddpm_hpc.errors import ConfigError
from ddpm_hpc.sweep import expand, load_sweep, parse_grid, split_values, sweep_from_dict, sweep_from_grid, value_text
from ddpm_hpc.sweep_members import load_record, prepare, write

BASE = {
    "description": "a small valid experiment",
    "data": {"dataset": "digits", "batch_size": 8},
    "model": {"arch": "unet", "channels": [8, 16], "conditioning": "embedding", "time_embedding": True,
              "norm": "group"},
    "diffusion": {"objective": "flow"},
    "train": {"steps": 10, "lr": 1e-3},
    "sample": {"sampler": "euler", "steps": 5},
    "slurm": {"time_min": 30},
}


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "experiments"
    (folder / "sweeps").mkdir(parents=True)
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(folder))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))
    (folder / "_cluster.yaml").write_text("slurm: {partition: debug, qos: null, gres: null, gpus_per_node: 0}\n")
    return folder


def sweep_file(root: Path, name: str, data: dict) -> None:
    (root / "sweeps" / f"{name}.yaml").write_text(yaml.safe_dump(data))


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_split_values_keeps_brackets_and_quotes_together():
    assert split_values("1e-4,3e-4") == ["1e-4", "3e-4"]
    assert split_values("[32,64,64],[64, 128,128]") == ["[32,64,64]", "[64, 128,128]"]
    assert split_values("{a: 1, b: 2},'x,y'") == ["{a: 1, b: 2}", "'x,y'"]


def test_parse_grid_reads_yaml_values():
    grid = parse_grid(["train.lr=0.0001,3.0e-4", "model.channels=[32,64,64],[64,128,128]", "train.compile=true"])
    assert grid == {"train.lr": [0.0001, 3e-4], "model.channels": [[32, 64, 64], [64, 128, 128]],
                    "train.compile": [True]}
    for bad, message in [("train.lr", "expected section.key=value1"), ("train.lr=", "an empty value"),
                         ("train.lr=1,,2", "an empty value"), ("=1,2", "expected section.key")]:
        with pytest.raises(ConfigError, match=message):
            parse_grid([bad])
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["train.lr=1", "train.lr=2"])


@pytest.mark.parametrize("value, text", [(3e-4, "3e-4"), (1e-4, "1e-4"), (0.999, "0.999"), (2.0, "2"), (0.5, "0.5"),
                                         (1.5e-5, "1.5e-5"), (100, "100"), ([32, 64, 64], "32x64x64"),
                                         (True, "true"), ("ddim", "ddim"), (None, "null")])
def test_value_text(value, text):
    assert value_text(value) == text


def test_grid_product_variants_and_seeds(root):
    sweep = sweep_from_dict("s", {
        "base": "base", "grid": {"train.lr": [1e-4, 3e-4], "model.channels": [[8, 16], [16, 32]],
                                 "sample.steps": [5]},
        "variants": [{"name": "plain", "train.ema_decay": 0.0}, {"name": "ema", "train.ema_decay": 0.99}],
        "seeds": 2}, "test")
    members = expand(sweep)
    assert len(members) == 2 * 2 * 2 * 2
    assert members[0].name == "s-lr1e-4-channels8x16-plain-seed0"
    assert members[1].name == "s-lr1e-4-channels8x16-plain-seed1"
    assert members[2].name == "s-lr1e-4-channels8x16-ema-seed0"
    assert members[-1].name == "s-lr3e-4-channels16x32-ema-seed1"
    assert len({m.name for m in members}) == 16
    first = members[0]
    # a single-valued grid key applies to every member but is not part of the name or the varied values
    assert {"sample.steps=5", "train.seed=0", "data.seed=0"} <= set(first.overrides)
    assert first.varied_text() == {"train.lr": "1e-4", "model.channels": "8x16", "train.ema_decay": "0",
                                   "variant": "plain", "seed": "0"}
    exps = prepare(sweep).experiments
    assert exps[-1].train.lr == 3e-4 and exps[-1].model.channels == (16, 32) and exps[-1].train.ema_decay == 0.99
    assert exps[-1].train.seed == exps[-1].data.seed == 1 and exps[-1].sample.steps == 5


def test_variants_alone_and_colliding_short_keys(root):
    sweep = sweep_from_dict("v", {"base": "base", "grid": {"train.steps": [10, 20], "sample.steps": [4, 8]},
                                  "variants": [{"train.lr": 1e-3}, {"train.lr": 1e-4, "train.grad_clip": 1.0}]},
                            "test")
    names = [m.name for m in expand(sweep)]
    assert names[:2] == ["v-train.steps10-sample.steps4-lr1e-3", "v-train.steps10-sample.steps4-grad_clip1-lr1e-4"]


def test_command_line_sweep_and_written_members_are_ordinary_experiments(root):
    sweep = sweep_from_grid("base", ["train.lr=1e-4,3e-4"], seeds=2, common=["train.steps=7"])
    assert sweep.name == "base-sweep"
    prepared = prepare(sweep)
    assert [m.name for m in prepared.members] == ["base-sweep-lr1e-4-seed0", "base-sweep-lr1e-4-seed1",
                                                  "base-sweep-lr3e-4-seed0", "base-sweep-lr3e-4-seed1"]
    write(prepared)
    for member, exp in prepared.pairs():
        loaded = load_experiment(member.name)  # what make sample / eval / submit EXP=<member> load
        assert loaded == exp and loaded.train.steps == 7 and loaded.slurm.time_min == 30
        assert loaded.slurm.partition == "debug"  # the cluster defaults still apply
    record = load_record("base-sweep")
    assert [m["name"] for m in record["members"]] == [m.name for m in prepared.members]
    assert record["members"][3]["varied"] == {"train.lr": "3e-4", "seed": "1"}
    # running it again rewrites nothing and stays valid
    again = prepare(sweep_from_grid("base", ["train.lr=1e-4,3e-4"], seeds=2, common=["train.steps=7"]))
    assert [m.name for m in again.members] == [m.name for m in prepared.members]


def test_load_sweep_file(root):
    sweep_file(root, "lr", {"base": "base", "grid": {"train": {"lr": [1e-4, 3e-4]}},
                            "slurm": {"array_parallelism": 2, "time_min": 45}, "eval": {"n": 100}})
    sweep = load_sweep("lr")
    assert sweep.array_parallelism == 2 and sweep.eval == {"n": 100}
    exps = prepare(sweep).experiments
    assert [e.slurm.time_min for e in exps] == [45, 45] and [e.name for e in exps] == ["lr-lr1e-4", "lr-lr3e-4"]


@pytest.mark.parametrize("data, message", [
    ({"base": "base", "grid": {"train.lrr": [1, 2]}}, r"grid: unknown key 'train.lrr'; did you mean 'train.lr'\?"),
    ({"base": "base", "grid": {"trian.steps": [1, 2]}}, r"did you mean 'train.steps'\?"),
    ({"base": "base", "grid": {}}, "an empty sweep"),
    ({"base": "base", "grid": {"train.lr": []}}, "train.lr: expected a non-empty list"),
    ({"base": "base", "grid": {"train.lr": [1e-4, -1.0]}}, r"member e-lr-1: train.lr: -1.0 is too small; must be >= "),
    ({"base": "base", "grid": {"sample.sampler": ["euler", "ddim"]}},
     "member e-sampler_ddim: sample.sampler=ddim needs diffusion.objective=ddpm"),
    ({"base": "base", "grid": {"train.lr": [1e-4, 0.0001]}}, "two members get the name 'e-lr1e-4'"),
    ({"base": "base", "variants": [{"name": "a", "train.lr": 1}, {"name": "a", "train.lr": 2}]},
     "two members get the name 'e-a'"),
    ({"base": "bsae", "grid": {"train.lr": [1, 2]}}, r"no experiment 'bsae' .*did you mean 'base'\?"),
    ({"base": "base", "grid": {"train.lr": [1]}, "seeds": 0}, "seeds: 0 is too small"),
    ({"base": "base", "grid": {"train.seed": [1, 2]}, "seeds": 2}, "train.seed cannot also vary"),
    ({"base": "base", "grdi": {"train.lr": [1]}}, r"unknown key 'grdi'; did you mean 'grid'\?"),
    ({"base": "base", "grid": {"train.lr": [1, 2]}, "slurm": {"array_parallelism": 0}}, "array_parallelism"),
    ({"base": "base", "grid": {"train.lr": [1, 2]}, "eval": {"nn": 5}}, r"eval: unknown key 'nn'; did you mean 'n'\?"),
])
def test_bad_sweeps_are_one_line_and_write_nothing(root, data, message):
    sweep_file(root, "e", data)
    before = listing(root)
    with pytest.raises(ConfigError, match=message) as info:
        prepare(load_sweep("e"))
    assert "\n" not in str(info.value)
    assert listing(root) == before


def test_hand_written_experiment_is_never_overwritten(root):
    (root / "s-lr1.yaml").write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match="member s-lr1: .* hand-written experiment"):
        prepare(sweep_from_dict("s", {"base": "base", "grid": {"train.lr": [1, 2]}}, "test"))
    with pytest.raises(ConfigError, match="sweep name 'base' is already an experiment"):
        prepare(sweep_from_grid("base", ["train.lr=1,2"], name="base"))


def test_the_repository_sweeps_are_valid(monkeypatch):
    """Every experiments/sweeps/*.yaml shipped here expands into valid members (nothing written)."""
    from ddpm_hpc.sweep import available_sweeps

    monkeypatch.delenv("DDPM_HPC_EXPERIMENTS", raising=False)
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    names = available_sweeps()
    assert "mnist_best_lr" in names
    for name in names:
        prepared = prepare(load_sweep(name))
        assert len({m.name for m in prepared.members}) == len(prepared.members) >= 2
    assert [m.name for m in prepare(load_sweep("mnist_best_lr")).members][:2] == [
        "mnist_best_lr-lr1e-4-seed0", "mnist_best_lr-lr1e-4-seed1"]


def test_report_writes_the_sweep_page_and_lists_the_sweep(root):
    """make report: the sweep's folder is no experiment; its comparison page is (re)written; the index links it."""
    from ddpm_hpc.report import render
    from ddpm_hpc.report.experiment_state import experiment_names

    write(prepare(sweep_from_grid("base", ["train.lr=1e-4,3e-4"], name="lrs")))
    assert "lrs" not in experiment_names() and "sweeps" not in experiment_names()
    assert {"lrs-lr1e-4", "lrs-lr3e-4"} <= set(experiment_names())
    pages = render("all")
    assert root / "lrs" / "index.html" in pages and (root / "lrs" / "index.html").is_file()
    assert "lrs-lr3e-4" in (root / "lrs" / "index.html").read_text()
    assert '<a href="lrs/index.html">lrs</a> (2 members)' in (root / "index.html").read_text()
    assert render("lrs") == [root / "lrs" / "index.html", root / "index.html"]
