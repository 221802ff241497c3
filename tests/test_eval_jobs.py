"""``make eval`` / ``make eval-sweep`` as SLURM jobs on the login node, without a cluster: where they run (the
Makefile's rule), what is submitted (submitit runs for real against the fake ``sbatch`` of test_submit), what the
registry records for ``make status``, and invalid sweep points refused before anything is submitted. The real
cluster runs the job in tests/slurm/test_eval_job.py."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from ddpm_hpc.cli import main as cli_main
from ddpm_hpc.config import load_experiment

from test_submit import checkpoints_without_pointer, fake, roots  # noqa: F401 - roots is a fixture

REPO = Path(__file__).resolve().parents[1]


def _make(target: str, path: str, cli: Path, **variables) -> str:
    """Run a Makefile target with ``CLI`` replaced by a script that prints its arguments."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=path, **{k: v for k, v in variables.items() if k.isupper() and k.startswith("SLURM_")})
    args = ["/usr/bin/make", "-s", "-C", str(REPO), target, f"CLI={cli}"]
    args += [f"{k}={v}" for k, v in variables.items() if not k.startswith("SLURM_")]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=True)
    return proc.stdout.strip()


@pytest.mark.skipif(not Path("/usr/bin/make").exists(), reason="needs GNU make at /usr/bin/make")
def test_make_eval_submits_where_sbatch_is_and_runs_here_otherwise(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = tmp_path / "ddpm-hpc"
    cli.write_text('#!/bin/sh\necho "$@"\n')
    cli.chmod(0o755)
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").chmod(0o755)
    without = str(tmp_path / "empty")  # no sbatch anywhere on PATH (the recipe needs only sh's builtins)
    with_sbatch = f"{bin_dir}"
    grid = "sample.guidance=1,2 sample.steps=4,8"
    assert _make("eval", with_sbatch, cli, EXP="demo", ARGS="--n 50") == "submit-eval demo --n 50"
    assert _make("eval-sweep", with_sbatch, cli, EXP="demo", GRID=grid) == f"submit-eval-sweep demo --grid {grid}"
    assert _make("eval", with_sbatch, cli, EXP="demo", LOCAL="1") == "eval demo"  # LOCAL=1: here
    assert _make("eval", with_sbatch, cli, EXP="demo", SLURM_JOB_ID="77") == "eval demo"  # already inside a job
    assert _make("eval", without, cli, EXP="demo") == "eval demo"  # a laptop
    assert _make("eval-sweep", without, cli, EXP="demo", GRID=grid) == f"eval-sweep demo --grid {grid}"
    assert _make("classifier", with_sbatch, cli, EXP="demo") == "submit-classifier demo"
    assert _make("classifier", without, cli, EXP="demo", ARGS="--steps 9") == "classifier demo --steps 9"


def test_submit_eval_registers_an_eval_job(roots, capsys):  # noqa: F811
    from jobs.status import experiment_status
    from jobs.tasks import EvalJob

    checkpoints_without_pointer(roots, load_experiment("tiny").to_json())
    assert cli_main(["submit-eval", "tiny", "sample.steps=4", "--n", "30"]) == 0
    out = capsys.readouterr().out
    assert "submitted eval job 4242 for tiny (ddim, 4 steps, 30 images), runs now" in out
    jobs = json.loads((roots / "experiments" / "tiny" / "jobs.json").read_text())["jobs"]
    assert [(j["job_id"], j["kind"], j["overrides"]) for j in jobs] == [("4242", "eval", ["sample.steps=4"])]
    logs = roots / "experiments" / "tiny" / "logs"
    job = pickle.loads((logs / "4242_submitted.pkl").read_bytes()).function
    assert isinstance(job, EvalJob) and job.kind == "eval" and job.grid is None
    assert job.options == {"n": 30, "fid_weights": None, "fid_ref_images": 0, "force": False}
    assert load_experiment("tiny", ["sample.steps=4"]).to_json() == job.config_json
    fresh = job._fresh()
    assert vars(fresh) == vars(job) and fresh is not job
    script = next(logs.glob("4242_submission.sh")).read_text()
    assert "#SBATCH --job-name=ddpm-tiny-eval" in script and "#SBATCH --time=10" in script
    assert "eval 4242" in experiment_status("tiny", None, None)  # make status shows it


def test_submit_eval_sweep_checks_every_point_first(roots, capsys):  # noqa: F811
    from jobs.tasks import EvalJob

    checkpoints_without_pointer(roots, load_experiment("tiny").to_json())  # a DDPM model, T=50
    for grid, named in ((["sample.sampler=ddim,euler"], "sample.sampler=euler"),
                        (["sample.steps=10,60"], "sample.steps=60")):
        assert cli_main(["submit-eval-sweep", "tiny", "--grid", *grid]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: eval-sweep point") and named in err and "\n" not in err, err
    assert not (roots / "experiments" / "tiny" / "jobs.json").exists()  # nothing submitted
    assert cli_main(["submit-eval-sweep", "tiny", "--grid", "sample.steps=5,10", "sample.eta=0,1", "--n", "40"]) == 0
    out = capsys.readouterr().out  # 4 points: the experiment's own settings (5 steps, eta 0) are one of them
    assert "submitted eval-sweep job 4242 for tiny (4 points, 40 images each)" in out
    job = pickle.loads((roots / "experiments" / "tiny" / "logs" / "4242_submitted.pkl").read_bytes()).function
    assert isinstance(job, EvalJob) and job.kind == "eval-sweep"
    assert job.grid == {"sample.steps": [5, 10], "sample.eta": [0, 1]}


def test_submit_eval_without_a_checkpoint_or_slurm_is_one_line(roots, capsys, monkeypatch):  # noqa: F811
    assert cli_main(["submit-eval", "tiny"]) == 2
    assert "no checkpoint of tiny" in capsys.readouterr().err
    fake(roots, "sbatch", "exit 0")
    (roots / "bin" / "sbatch").unlink()
    monkeypatch.setenv("PATH", str(roots / "bin"))
    assert cli_main(["submit-eval-sweep", "tiny", "--grid", "sample.steps=5,10"]) == 2
    err = capsys.readouterr().err
    assert "sbatch" in err and "use ddpm-hpc eval-sweep tiny here" in err


def test_the_classifier_as_a_job(roots, capsys):  # noqa: F811
    """submit-classifier records a classifier job; the job itself (run here, in-process) trains the classifier of the
    experiment's dataset and records its events; an existing classifier is refused before submitting."""
    from jobs import registry
    from jobs.tasks import ClassifierJob

    from ddpm_hpc.metrics.classifier import weights_path

    assert cli_main(["submit-classifier", "tiny", "--steps", "2"]) == 0
    assert "submitted classifier job 4242 for digits" in capsys.readouterr().out
    [entry] = json.loads((roots / "experiments" / "tiny" / "jobs.json").read_text())["jobs"]
    assert entry["kind"] == "classifier"
    job = pickle.loads((roots / "experiments" / "tiny" / "logs" / "4242_submitted.pkl").read_bytes()).function
    assert isinstance(job, ClassifierJob) and job.options == {"steps": 2, "seed": 0, "force": False}
    assert job() == str(weights_path("digits"))  # what the compute node runs
    assert [e["event"] for e in registry.events("tiny") if e["kind"] == "classifier"] == ["start", "finished"]
    assert cli_main(["submit-classifier", "tiny"]) == 2
    assert "--force" in capsys.readouterr().err
    # here, by the experiment's name: its dataset
    assert cli_main(["classifier", "tiny", "--steps", "1", "--device", "cpu", "--force"]) == 0
    assert str(weights_path("digits")) in capsys.readouterr().out
    assert cli_main(["classifier", "tinny"]) == 2
    assert "neither a dataset" in capsys.readouterr().err
