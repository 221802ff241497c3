"""The ``ddpm-hpc`` command line: user errors are one ``error:`` line and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.cli import main

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml") if not p.stem.startswith("_"))


def run_cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DDPM_HPC_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_train_unknown_experiment():
    result = run_cli("train", "nosuch")
    line = assert_one_error_line(result)
    assert "nosuch" in line and "demo" in line  # lists what there is
    assert result.stderr.strip() == line  # and nothing else


@pytest.fixture
def tmp_roots(tmp_path, monkeypatch) -> dict:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "bad.yaml").write_text(yaml.safe_dump({"train": {"step": 3}}))
    (experiments / "tiny.yaml").write_text(yaml.safe_dump({"model": {"arch": "conv"}, "data": {"dataset": "digits"}}))
    env = {"DDPM_HPC_EXPERIMENTS": str(experiments), "DDPM_HPC_CHECKPOINTS": str(tmp_path / "checkpoints"),
           "DDPM_HPC_DATA": str(tmp_path / "data")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    return env


@pytest.mark.parametrize("args,words", [
    (("train", "../../x"), ["invalid experiment name"]),
    (("sample", "/etc/passwd"), ["invalid experiment name"]),
    (("train", "bad"), ["bad.yaml", "'step'", "'steps'"]),
    (("train", "tiny", "train.steps"), ["key.sub=value"]),
    (("train", "tiny", "train.steps=0"), ["train.steps", ">= 1"]),
    (("sample", "tiny"), ["no checkpoint", "tiny", "train it first"]),
    (("sample", "tiny", "sample.checkpoint=7"), ["no checkpoint for step 7"]),
    (("sample", "tiny", "sample.checkpoint=/no/such.safetensors"), ["no such file"]),
    (("train", "tiny", "data.dataset=mnist"), ["mnist", "make data"]),  # not on disk: never downloaded
    (("train", "tiny", "data.dataset=cifar10"), ["cifar10", "make data"]),
])
def test_user_errors_are_one_line(tmp_roots, capsys, args, words):
    """In-process (as the console script runs it): one `error:` line on stderr, exit status 2."""
    assert main(list(args)) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for word in words:
        assert word in lines[0], lines[0]
    assert not Path(tmp_roots["DDPM_HPC_EXPERIMENTS"], "tiny", "metrics.jsonl").exists()


def test_bad_file_through_the_console_entry_point(tmp_roots):
    line = assert_one_error_line(run_cli("train", "bad", env=tmp_roots))
    assert "bad.yaml" in line and "'steps'" in line


def test_list_prints_every_preset():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert set(PRESETS) <= set(listed)
    for name in PRESETS:
        assert "(invalid" not in listed[name] and len(listed[name].split()) > 1  # with its description


def test_list_marks_invalid_files(tmp_roots):
    result = run_cli("list", env=tmp_roots)
    assert result.returncode == 0
    assert "bad" in result.stdout and "(invalid" in result.stdout and "tiny" in result.stdout


def test_usage_errors_exit_2():
    line = assert_one_error_line(run_cli("train"))
    assert "required: experiment" in line and "key.sub=value" not in line and "ddpm-hpc train --help" in line


@pytest.mark.parametrize("args,words", [
    (("eval", "demo", "--n", "0"), ["--n", "0", ">= 2"]),
    (("eval", "demo", "--n", "-5"), ["--n", "-5", ">= 2"]),
    (("eval", "demo", "--n", "many"), ["--n", "'many' is not a whole number"]),
    (("eval", "demo", "--fid-ref-images", "-1"), ["--fid-ref-images", ">= 0"]),
    (("eval", "demo", "--fid-ref-images", "1"), ["--fid-ref-images", "0 (all) or at least 2"]),
    (("classifier", "digits", "--steps", "0"), ["--steps", ">= 1"]),
    (("classifier", "digits", "--seed", "-1"), ["--seed", ">= 0"]),
    (("classifier", "digits", "--device", "gpu7"), ["--device", "gpu7"]),
])
def test_numeric_arguments_are_checked_before_any_work(tmp_roots, args, words):
    """Out-of-range numbers are one line before anything runs (--n 0 was a torch.cat traceback after loading the
    checkpoint; --steps 0 silently trained the default 600 steps)."""
    line = assert_one_error_line(run_cli(*args, env=tmp_roots))
    for word in words:
        assert word in line, line
    assert not Path(tmp_roots["DDPM_HPC_CHECKPOINTS"], "_classifiers").exists()


def test_help_texts():
    top = run_cli("--help").stdout
    description = top.split("positional arguments")[0].split("\n\n", 1)[1]
    assert "``" not in top and "cli.build_parser" not in top
    assert description.strip().endswith(".") and "register" not in description
    for command in ("sample", "eval", "submit-sample"):
        text = run_cli(command, "--help").stdout
        assert "train.steps" not in text and "sample.steps=20" in text, (command, text)
    assert "train.steps=500" in run_cli("train", "--help").stdout


def test_data_without_names_downloads_both_datasets(monkeypatch, capsys, tmp_path):
    """``make data`` runs ``ddpm-hpc data`` with no names. The download itself is replaced (no internet here): what
    is checked is the command line, which argparse before Python 3.12 rejected with nargs="*" plus choices."""
    from ddpm_hpc import data

    asked = []
    monkeypatch.setattr(data, "download_dataset", lambda name: asked.append(name) or tmp_path / name)
    assert main(["data"]) == 0
    assert asked == ["mnist", "cifar10"]
    assert main(["data", "cifar10"]) == 0 and asked[-1] == "cifar10"
    assert main(["data", "mnsit"]) == 2
    assert capsys.readouterr().err == "error: ddpm-hpc data: unknown dataset 'mnsit'; choose from mnist, cifar10\n"


def test_make_setup_refuses_a_python_older_than_3_10_in_one_line(tmp_path):
    """The login node's python3 may be older than the toolkit needs: make setup says so before creating anything.
    The old interpreter is a stand-in script answering like Python 3.9 (this machine has no such interpreter)."""
    fake = tmp_path / "python3.9"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.9.18" && exit 0\nexit 1\n')
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-s", "setup", f"VENV={venv}", f"PYTHON={fake}"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout.startswith("error: ddpm-hpc needs Python >= 3.10;") and "Python 3.9.18" in proc.stdout
    assert not venv.exists()
