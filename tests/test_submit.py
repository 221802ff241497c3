"""``make submit`` / ``make sample`` / ``make status`` on the login node, without a cluster: fake ``sbatch``, ``srun``
and ``squeue`` scripts on PATH stand in for SLURM (submitit runs for real against them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from ddpm_hpc.checkpoint import save_checkpoint
from ddpm_hpc.cli import main as cli_main
from ddpm_hpc.config import load_experiment

pytest.importorskip("submitit")

TINY = {"data": {"dataset": "digits", "batch_size": 16}, "model": {"arch": "conv"}, "diffusion": {"T": 50},
        "train": {"steps": 30, "device": "cpu"}, "sample": {"sampler": "ddim", "steps": 5}}
CLUSTER = {"slurm": {"partition": "debug", "qos": None, "gres": None, "gpus_per_node": 0, "time_min": 10,
                     "sample_time_min": 10, "signal_delay_s": 30, "setup": []}}
REFUSED = "sbatch: error: Batch job submission failed: Invalid partition name specified"


@pytest.fixture
def roots(tmp_path, monkeypatch) -> Path:
    """Experiment/checkpoint/data roots with the experiment ``tiny``, and a PATH whose SLURM commands are fakes that
    accept every job (``fake(...)`` changes one of them)."""
    for sub in ("experiments", "checkpoints", "data", "bin"):
        (tmp_path / sub).mkdir()
    (tmp_path / "experiments" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "experiments" / "_cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path / "experiments"))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("DDPM_HPC_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    fake(tmp_path, "squeue", "exit 0")  # no live jobs
    fake(tmp_path, "srun", "exit 0")
    fake(tmp_path, "sbatch", 'n=$(($(cat "$0.n" 2>/dev/null || echo 4241) + 1)); echo $n > "$0.n"; '
                             'echo "Submitted batch job $n"')  # 4242, 4243, ...
    return tmp_path


def fake(root: Path, name: str, body: str) -> None:
    path = root / "bin" / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def checkpoints_without_pointer(root: Path, config_json: str) -> None:
    """Steps 10 and 20 of ``tiny`` on disk, ``latest.json`` lost."""
    folder = root / "checkpoints" / "tiny"
    for step in (10, 20):
        save_checkpoint(folder, step, {"w": torch.zeros(2)}, {"step": str(step), "config": config_json})
    (folder / "latest.json").unlink()


def test_step_files_count_without_latest_json(roots, capsys):
    """latest.json lost, valid step files there: make sample submits, make status and the job see step 20."""
    from jobs.status import training_progress
    from jobs.tasks import _latest_step

    checkpoints_without_pointer(roots, load_experiment("tiny").to_json())
    assert cli_main(["submit-sample", "tiny"]) == 0
    assert "submitted sampling job 4242 for tiny" in capsys.readouterr().out
    assert "ckpt 20 (" in training_progress("tiny", 30, running=False)
    assert _latest_step("tiny") == 20


def test_mismatching_checkpoint_refused_without_latest_json(roots, capsys):
    checkpoints_without_pointer(roots, load_experiment("tiny", ["diffusion.T=60"]).to_json())
    assert cli_main(["submit", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "step-000000020.safetensors was trained with diffusion.T=60" in err and "Traceback" not in err
    # a stored config that cannot be read is left to the job's loader (it skips the file), not a traceback here
    checkpoints_without_pointer(roots, "{not json")
    assert cli_main(["submit", "tiny"]) == 0


@pytest.mark.parametrize("broken, message", [
    ("sbatch", f"error: sbatch refused the training job: {REFUSED}"),
    ("srun", "error: srun not found: this is not a SLURM login node (use make local EXP=tiny here)"),
])
def test_refused_submission_leaves_nothing_behind(roots, capsys, monkeypatch, broken, message):
    if broken == "sbatch":
        fake(roots, "sbatch", f'echo "{REFUSED}" >&2; exit 1')
    else:
        (roots / "bin" / "srun").unlink()
        monkeypatch.setenv("PATH", str(roots / "bin"))  # no real srun either
    assert cli_main(["submit", "tiny"]) == 2
    assert capsys.readouterr().err == message + "\n"
    assert files(roots / "experiments") == {"tiny.yaml", "_cluster.yaml"}  # no snapshot, pickles or empty folders


def test_refused_submission_keeps_the_last_submission(roots, capsys):
    """A refused resubmission leaves the previous snapshot, registry and submitit files as they were."""
    assert cli_main(["submit", "tiny"]) == 0
    folder = roots / "experiments" / "tiny"
    before = {name: (folder / name).read_bytes() for name in files(folder) if (folder / name).is_file()}
    assert {"submitted_config.yaml", "jobs.json", "logs/4242_submitted.pkl"} <= before.keys()
    fake(roots, "sbatch", f'echo "{REFUSED}" >&2; exit 1')
    assert cli_main(["submit", "tiny", "train.steps=40"]) == 2
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert files(folder) == set(before) | {"logs"}
    assert len(json.loads((folder / "jobs.json").read_text())["jobs"]) == 2


def test_refused_sampling_job_names_the_submitted_training_job(roots, capsys):
    sampling_refused = f'if grep -q afterok "$1"; then echo "{REFUSED}" >&2; exit 1; fi'
    fake(roots, "sbatch", f'{sampling_refused}; echo "Submitted batch job 7"')
    assert cli_main(["submit", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training job 7 of tiny is submitted, but sbatch refused the sampling job") and \
        "make sample EXP=tiny" in err and err.count("\n") == 1
    folder = roots / "experiments" / "tiny"
    assert [j["kind"] for j in json.loads((folder / "jobs.json").read_text())["jobs"]] == ["train"]
    assert (folder / "submitted_config.yaml").is_file() and (folder / "logs" / "7_submitted.pkl").is_file()
    assert not [p for p in (folder / "logs").iterdir() if p.suffix == ".pkl" and p.name != "7_submitted.pkl"]


def test_missing_data_warning_uses_the_loaders_test(roots, capsys):
    """An empty MNIST/raw (left by an old failed download) still warns."""
    from jobs.submit import warn_missing_data

    (roots / "data" / "MNIST" / "raw").mkdir(parents=True)
    warn_missing_data(load_experiment("tiny", ["data.dataset=mnist"]))
    err = capsys.readouterr().err
    assert err.startswith(f"warning: no mnist dataset in {roots / 'data' / 'MNIST' / 'raw'} here") and \
        "make data" in err
    warn_missing_data(load_experiment("tiny"))  # digits ships with scikit-learn
    assert capsys.readouterr().err == ""


def test_scancel_failure_is_one_line(roots, capsys):
    assert cli_main(["submit", "tiny"]) == 0
    fake(roots, "squeue", 'echo "4242|RUNNING|None"; echo "4243|PENDING|Dependency"')
    fake(roots, "scancel", 'echo "scancel: error: Kill job error on job id 4242: Access/permission denied" >&2; exit 1')
    capsys.readouterr()
    for command in (["cancel", "tiny"], ["submit", "tiny", "--force"]):
        assert cli_main(command) == 2
        assert capsys.readouterr().err == ("error: could not cancel 4242, 4243 of tiny: scancel 4242 failed: scancel: "
                                           "error: Kill job error on job id 4242: Access/permission denied\n")
