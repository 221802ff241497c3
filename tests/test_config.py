"""Experiment files: every preset loads, and every mistake is one line naming the file and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ddpm_hpc import paths
from ddpm_hpc.config import Experiment, experiment_from_json, load_experiment
from ddpm_hpc.config_files import available_experiments, parse_overrides
from ddpm_hpc.errors import ConfigError, UserError

REPO_EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
PRESETS = sorted(p.stem for p in REPO_EXPERIMENTS.glob("*.yaml") if not p.stem.startswith("_"))
GOOD = {
    "description": "a small valid experiment",
    "data": {"dataset": "digits", "batch_size": 8},
    "model": {"arch": "seed_unet"},
    "diffusion": {"objective": "ddpm", "T": 50},
    "train": {"steps": 10},
    "sample": {"sampler": "ddim", "steps": 5},
}


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """An experiments root of our own, with one valid experiment ``good``; no cluster defaults."""
    folder = tmp_path / "experiments"
    folder.mkdir()
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(folder))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    (folder / "good.yaml").write_text(yaml.safe_dump(GOOD))
    return folder


def write(root: Path, name: str, data) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_change(section: str, **values) -> dict:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    data[section] = {**data.get(section, {}), **values}
    return data


def error_of(name: str, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(name, overrides)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message  # one line
    assert isinstance(info.value, UserError) and info.value.exit_code != 0
    return message


# --- presets ---------------------------------------------------------------------------------------------------------

def test_presets_exist():
    expected = {"mnist_conv_2k", "cifar_conv_2k", "mnist_unet_10k", "cifar_unet_10k", "mnist_cond_25k",
                "cifar_cond_25k", "mnist_flow_10k", "cifar_flow_25k", "demo", "mnist_best", "cifar_best"}
    assert expected <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads(name, monkeypatch):
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(REPO_EXPERIMENTS))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    exp = load_experiment(name)
    assert exp.name == name and exp.description and "\n" not in exp.description
    assert experiment_from_json(exp.to_json()) == exp  # the form stored in checkpoints round-trips
    if name.startswith(("mnist_", "cifar_")) and name not in ("mnist_best", "cifar_best"):
        # the practical's settings: batch 16, Adam 1e-4, T=400, its networks
        assert exp.data.batch_size == 16 and exp.train.lr == 1e-4, name
        assert exp.model.arch in ("conv", "seed_unet") and exp.model.norm == "batch"
        if exp.diffusion.objective == "ddpm":
            assert exp.diffusion.T == 400 and exp.diffusion.schedule == "linear"
            assert (exp.diffusion.beta1, exp.diffusion.beta2) == (1e-4, 0.02)
        if exp.model.arch == "seed_unet":
            assert exp.model.channels == (72, 96, 128, 196, 256)
        assert exp.train.steps == int(name.rsplit("_", 1)[1][:-1]) * 1000
        assert exp.data.dataset == {"mnist": "mnist", "cifar": "cifar10"}[name.split("_")[0]]


def test_demo_is_conditional_on_the_embedded_digits(monkeypatch):
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(REPO_EXPERIMENTS))
    exp = load_experiment("demo")
    assert exp.data.dataset == "digits" and exp.model.conditioning != "none"


def test_available_experiments_skip_underscore_files(root):
    write(root, "_cluster", {"slurm": {"partition": "x"}})
    write(root, "other", GOOD)
    assert available_experiments() == ["good", "other"]


def test_valid_file_and_frozen(root):
    exp = load_experiment("good")
    assert isinstance(exp, Experiment) and exp.train.steps == 10 and exp.diffusion.T == 50
    assert exp.model.channels == (72, 96, 128, 196, 256) and isinstance(exp.model.channels, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.train.steps = 5  # type: ignore[misc]
    assert exp.sample_steps == 5


# --- one line per mistake, naming the file and the key -------------------------------------------------------------

def test_unknown_key_suggests_the_closest(root):
    path = write(root, "bad", with_change("train", step=5))
    message = error_of("bad")
    assert str(path) in message and "train" in message and "'step'" in message and "'steps'" in message


def test_unknown_key_without_a_close_match_lists_valid_keys(root):
    path = write(root, "bad", with_change("sample", zzzzqqq=1))
    message = error_of("bad")
    assert str(path) in message and "'zzzzqqq'" in message and "sampler" in message and "guidance" in message


def test_unknown_section(root):
    data = dict(GOOD)
    data["trian"] = {"steps": 3}
    path = write(root, "bad", data)
    message = error_of("bad")
    assert str(path) in message and "'trian'" in message and "'train'" in message


@pytest.mark.parametrize("section,key,value,words", [
    ("train", "steps", "many", ["whole number", "'many'"]),
    ("train", "steps", True, ["whole number"]),
    ("train", "steps", 2.5, ["whole number"]),
    ("train", "lr", "fast", ["number", "'fast'"]),
    ("train", "restart", "maybe", ["true or false"]),
    ("model", "channels", 5, ["list"]),
    ("model", "channels", [8, "x", 8, 8, 8], ["model.channels[1]", "whole number"]),
    ("sample", "checkpoint", [1], ["text"]),
    ("data", "root", 3.5, ["text"]),
])
def test_wrong_type(root, section, key, value, words):
    path = write(root, "bad", with_change(section, **{key: value}))
    message = error_of("bad")
    assert str(path) in message and f"{section}.{key}" in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("section,key,value,bound", [
    ("train", "steps", 0, ">= 1"),
    ("data", "batch_size", -4, ">= 1"),
    ("model", "dropout", 1.5, "<= 1.0"),
    ("train", "ema_decay", -0.1, ">= 0.0"),
    ("diffusion", "T", 0, ">= 1"),
    ("train", "keep_checkpoints", 1, ">= 2"),
])
def test_out_of_range(root, section, key, value, bound):
    path = write(root, "bad", with_change(section, **{key: value}))
    message = error_of("bad")
    assert str(path) in message and f"{section}.{key}" in message and bound in message


@pytest.mark.parametrize("section,key,value,choices", [
    ("model", "arch", "resnet", ["conv", "seed_unet", "unet"]),
    ("sample", "sampler", "dpm", ["ddpm", "ddim", "euler", "heun"]),
    ("diffusion", "schedule", "sigmoid", ["linear", "cosine"]),
    ("data", "dataset", "imagenet", ["mnist", "cifar10", "digits"]),
])
def test_literal_choices_listed(root, section, key, value, choices):
    path = write(root, "bad", with_change(section, **{key: value}))
    message = error_of("bad")
    assert str(path) in message and f"{section}.{key}" in message and repr(value) in message
    for choice in choices:
        assert choice in message


@pytest.mark.parametrize("changes,words", [
    ({"diffusion": {"objective": "flow"}, "sample": {"sampler": "ddpm"}}, ["sample.sampler", "flow"]),
    ({"diffusion": {"objective": "flow"}, "sample": {"sampler": "ddim", "steps": 5}}, ["sample.sampler", "flow"]),
    ({"sample": {"sampler": "euler", "steps": 5}}, ["sample.sampler=euler", "diffusion.objective"]),
    ({"sample": {"sampler": "heun", "steps": 5}}, ["sample.sampler=heun", "diffusion.objective"]),
    ({"sample": {"sampler": "ddpm", "steps": 10}}, ["ddpm", "all T", "ddim"]),
    ({"sample": {"sampler": "ddim", "steps": 51}}, ["sample.steps=51", "diffusion.T=50"]),
    ({"model": {"arch": "conv", "conditioning": "onehot"}}, ["model.arch=conv"]),
    ({"train": {"label_dropout": 0.1}}, ["train.label_dropout", "model.conditioning"]),
    ({"sample": {"sampler": "ddim", "steps": 5, "guidance": 2.0}}, ["sample.guidance", "model.conditioning"]),
    # a conditional model trained without label dropout never learnt the unconditional branch guidance needs
    ({"model": {"arch": "unet", "channels": [8, 16], "conditioning": "embedding"},
      "sample": {"sampler": "ddim", "steps": 5, "guidance": 3.0}}, ["sample.guidance=3", "train.label_dropout"]),
    ({"model": {"arch": "unet", "channels": [8, 16], "conditioning": "embedding"},
      "sample": {"sampler": "ddim", "steps": 5, "guidance": 0.0}}, ["sample.guidance=0", "train.label_dropout"]),
    ({"sample": {"sampler": "ddim", "steps": 5, "eta": 1.5}}, ["sample.eta", "<= 1"]),
    ({"model": {"arch": "seed_unet", "channels": [8, 8, 8]}}, ["model.channels", "5"]),
    ({"diffusion": {"T": 50, "beta1": 0.02, "beta2": 0.01}}, ["beta1", "beta2"]),
])
def test_inconsistent_settings(root, changes, words):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    path = write(root, "bad", data)
    message = error_of("bad")
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_consistent_flow_and_conditional_settings_load(root):
    write(root, "flow", {"data": {"dataset": "digits"},
                         "model": {"arch": "unet", "channels": [8, 16], "conditioning": "embedding"},
                         "diffusion": {"objective": "flow"}, "train": {"label_dropout": 0.1},
                         "sample": {"sampler": "heun", "steps": 4, "guidance": 3.0}})
    exp = load_experiment("flow")
    assert exp.sample.sampler == "heun" and exp.sample.guidance == 3.0 and exp.sample_steps == 4
    write(root, "flow0", {"diffusion": {"objective": "flow"}, "sample": {"sampler": "euler"}})
    assert load_experiment("flow0").sample_steps == 50  # flow default
    assert load_experiment("good", ["sample.steps=0"]).sample_steps == 50  # ddim: all T


def test_invalid_yaml_and_top_level(root):
    path = write(root, "broken", "train:\n  steps: [1, 2\n")
    message = error_of("broken")
    assert str(path) in message and "YAML" in message and "line" in message
    path = write(root, "listy", "- 1\n- 2\n")
    message = error_of("listy")
    assert str(path) in message and "mapping" in message
    path = write(root, "section_not_mapping", {**GOOD, "train": 5})
    message = error_of("section_not_mapping")
    assert str(path) in message and "train" in message and "mapping" in message


def test_description_must_be_text(root):
    path = write(root, "bad", {**GOOD, "description": ["a", "b"]})
    assert str(path) in error_of("bad")


def test_unknown_experiment_lists_names(root):
    write(root, "other", GOOD)
    message = error_of("nosuch")
    assert "'nosuch'" in message and str(root) in message and "good" in message and "other" in message
    message = error_of("godo")
    assert "did you mean 'good'" in message and "other" in message


@pytest.mark.parametrize("name", ["../../x", "../good", "/etc/passwd", "a/b", "..", ".hidden", "x\\..\\y", ""])
def test_names_cannot_escape_the_experiments_folder(root, name):
    (root.parent / "x.yaml").write_text(yaml.safe_dump(GOOD))  # a valid file outside experiments/
    (root.parent.parent / "x.yaml").write_text(yaml.safe_dump(GOOD))
    message = error_of(name)
    assert "invalid experiment name" in message and "reserved" not in message
    with pytest.raises(ConfigError):
        paths.experiment_dir(name)
    with pytest.raises(ConfigError):
        paths.checkpoint_dir(name)


# --- overrides -----------------------------------------------------------------------------------------------------

def test_overrides_parse(root):
    exp = load_experiment("good", ["train.steps=5", "sample.sampler=ddim", "sample.steps=3", "train.lr=2.5e-4",
                                   "model.channels=[8,8,8,8,16]", "train.restart=true", "data.root=/tmp/x"])
    assert exp.train.steps == 5 and exp.sample.steps == 3 and exp.train.lr == 2.5e-4
    assert exp.model.channels == (8, 8, 8, 8, 16) and exp.train.restart is True and exp.data.root == "/tmp/x"
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}


def test_overrides_yaml_quirks(root):
    """PyYAML reads `1e-3` (no dot) as text and `5000` as a number; both must still mean what they say."""
    exp = load_experiment("good", ["train.lr=1e-3", "sample.checkpoint=5000", "train.ema_decay=1"])
    assert exp.train.lr == 1e-3 and exp.sample.checkpoint == "5000" and exp.train.ema_decay == 1.0
    assert "train.lr" in error_of("good", ["train.lr=nan"])


@pytest.mark.parametrize("item", ["train.steps", "=5", "train.steps5"])
def test_bad_override_syntax(root, item):
    message = error_of("good", [item])
    assert repr(item) in message and "key.sub=value" in message


def test_override_errors_name_the_file_and_the_overrides(root):
    message = error_of("good", ["train.step=5"])
    assert str(root / "good.yaml") in message and "train.step=5" in message and "'steps'" in message
    message = error_of("good", ["train.steps=0"])
    assert "train.steps" in message and ">= 1" in message
    message = error_of("good", ["trainn.steps=3"])
    assert "'trainn'" in message and "'train'" in message
    message = error_of("good", ["train=5", "train.steps=3"])
    assert "train" in message


def test_cluster_defaults_merge_under_slurm(root):
    write(root, "_cluster", {"slurm": {"partition": "big", "time_min": 60}})
    write(root, "mine", {**GOOD, "slurm": {"time_min": 30}})
    exp = load_experiment("mine")
    assert exp.slurm.partition == "big" and exp.slurm.time_min == 30  # the experiment's own values win
    write(root, "_cluster", {"slurm": {"partition": "big"}, "train": {"steps": 3}})
    message = error_of("mine")
    assert str(root / "_cluster.yaml") in message and "slurm" in message
    write(root, "_cluster", {"slurm": {"partitoin": "big"}})
    assert "'partition'" in error_of("mine")


# --- values a range check cannot catch, unreadable files, missing folders -------------------------------------------

@pytest.mark.parametrize("override", ["train.lr=.nan", "train.lr=.inf", "train.lr=-.inf", "train.lr=inf",
                                      "train.checkpoint_minutes=.inf", "sample.eta=.nan", "slurm.mem_gb=.inf",
                                      "slurm.additional={constraint: .nan}", "train.lr=1" + "0" * 400])
def test_non_finite_numbers_are_refused(root, override):
    message = error_of("good", [override])
    assert override.split("=")[0] in message and "finite" in message, message


@pytest.mark.parametrize("key", ["data.seed", "train.seed", "sample.seed"])
def test_seeds_stay_in_range(root, key):
    assert ">= 0" in error_of("good", [f"{key}=-1"])
    assert "<= 4294967295" in error_of("good", [f"{key}=4294967296"])
    assert "64-bit" in error_of("good", [f"{key}={2**70}"])
    assert load_experiment("good", [f"{key}=4294967295"])


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_device_strings_accepted(root, device):
    assert load_experiment("good", [f"train.device={device}"]).train.device == device


@pytest.mark.parametrize("device,guess", [("tpu", None), ("gpu", "cuda"), ("cdua", "cuda"), ("CPU", "cpu"),
                                          ("cuda0", "cuda:0"), ("cuda:x", None), ("cuda:-1", None), ("mps", None)])
def test_device_strings_refused_with_the_choices(root, device, guess):
    message = error_of("good", [f"train.device={device}"])
    assert "train.device" in message and repr(device) in message and "auto, cpu, cuda or cuda:N" in message
    assert guess is None or f"did you mean '{guess}'" in message, message


def test_duplicate_keys_name_the_file_the_key_and_the_lines(root):
    path = write(root, "dup", "train:\n  steps: 3\n  lr: 0.1\n  steps: 5\n")
    message = error_of("dup")
    assert str(path) in message and "'steps'" in message and "line 4" in message and "line 2" in message
    write(root, "dup", "train: {steps: 3}\ntrain: {steps: 5}\n")
    assert "'train'" in error_of("dup")
    assert "'a'" in error_of("good", ["slurm.additional={a: 1, a: 2}"])
    # a merge key's values may still be overridden (that is what merges are for)
    write(root, "merged", "data: {dataset: digits}\ntrain:\n  <<: {steps: 3, lr: 0.1}\n  steps: 5\n")
    assert load_experiment("merged").train.steps == 5


def test_unreadable_files_are_one_line_errors(root):
    path = root / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00train: 1\n")
    message = error_of("binary")
    assert str(path) in message and "UTF-8" in message
    (root / "folder.yaml").mkdir()
    assert available_experiments() == ["binary", "good"]  # a folder named *.yaml is not an experiment


def test_invalid_override_yaml_is_one_line(root):
    message = error_of("good", ["train.steps=[1"])
    assert "'train.steps=[1'" in message and "YAML" in message


def test_missing_cluster_defaults_file_is_an_error(root, monkeypatch, tmp_path):
    monkeypatch.setenv("DDPM_HPC_CLUSTER_CONFIG", str(tmp_path / "nowhere.yaml"))
    message = error_of("good")
    assert "DDPM_HPC_CLUSTER_CONFIG" in message and "nowhere.yaml" in message
    (tmp_path / "nowhere.yaml").write_text(yaml.safe_dump({"slurm": {"partition": "big"}}))
    assert load_experiment("good").slurm.partition == "big"


def test_missing_experiments_folder_is_an_error(root, monkeypatch, tmp_path, capsys):
    from jobs.cli import main

    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path / "nonexist"))
    with pytest.raises(ConfigError, match="DDPM_HPC_EXPERIMENTS.*does not exist"):
        available_experiments()
    assert "does not exist" in error_of("good")
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nonexist" in err and len(err.splitlines()) == 1


def test_reserved_names_say_why(root):
    write(root, "_cluster", {"slurm": {"partition": "x"}})
    message = error_of("_cluster")
    assert "reserved" in message and "'_'" in message and "letters, digits" not in message
