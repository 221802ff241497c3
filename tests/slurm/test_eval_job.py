"""``make eval`` on the real local cluster (tests/slurm/cluster.sh): where sbatch is on PATH it submits a job, and the
job writes the eval JSON. Kept tiny for the shared node: a conv DDPM trained 20 steps here, a classifier trained 20
steps here, 20 images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_jobs import REPO, Lab, make_lab, wait_final

TINY = """\
description: "SLURM eval test: digits, conv, 20 steps"
data: {dataset: digits, batch_size: 16}
model: {arch: conv}
diffusion: {objective: ddpm, T: 50}
train: {steps: 20, log_every: 10, checkpoint_every: 20, device: cpu}
sample: {sampler: ddim, steps: 5, n: 16, trajectory: false}
"""


@pytest.fixture(scope="module")
def lab(slurm_cluster, tmp_path_factory) -> Lab:
    lab = make_lab(tmp_path_factory, "slurm-eval")
    lab.write_experiment("evaltiny", TINY)
    cli = str(REPO / ".venv" / "bin" / "ddpm-hpc")
    for args in (["train", "evaltiny"], ["classifier", "digits", "--steps", "20", "--device", "cpu"]):
        proc = subprocess.run([cli, *args], capture_output=True, text=True, env=lab.env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return lab


@pytest.mark.slurm
def test_make_eval_submits_a_job_that_writes_the_eval_json(slurm_cluster, lab):
    env_without_job = {k: v for k, v in lab.env.items() if not k.startswith("SLURM_JOB")}
    lab.env = env_without_job  # make's rule: inside a SLURM job it would run here
    proc = lab.make("eval", "evaltiny", ARGS="--n 20")
    assert "submitted eval job" in proc.stdout, proc.stdout + proc.stderr
    [job] = lab.jobs("evaltiny")
    assert job["kind"] == "eval"
    assert wait_final(slurm_cluster, job["job_id"]) == "COMPLETED", lab.log("evaltiny", job["job_id"])
    out = lab.exps / "evaltiny" / "eval" / "fresh-step0000020-ddim5-n20-seed1234.json"
    result = json.loads(out.read_text())
    assert result["n"] == 20 and result["nfe_per_image"] == 5 and result["step"] == 20
    assert result["classifier_fd"] >= 0 and result["classifier_fd_floor"] > 0 and "classifier_fd_ratio" in result
    assert [e["event"] for e in lab.events("evaltiny", "eval")] == ["start", "finished"]
    status = lab.make("status", "evaltiny").stdout
    assert f"eval {job['job_id']} COMPLETED" in status, status
