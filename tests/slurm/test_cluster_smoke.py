"""Smoke tests of the local SLURM cluster (tests/slurm/cluster.sh): plain sbatch, and submitit requeue on USR2."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.slurm


def test_sbatch_wrap_completes(slurm_cluster, tmp_path):
    out = subprocess.run(
        ["sbatch", "--parsable", "-p", "debug", "-o", str(tmp_path / "wrap-%j.out"), "--wrap", "echo hello-slurm"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    job_id = out.strip().split(";")[0]
    slurm_cluster.wait_for(
        lambda: slurm_cluster.sacct_states(job_id) == ["COMPLETED"], 30, f"sacct to show job {job_id} COMPLETED"
    )
    assert (tmp_path / f"wrap-{job_id}.out").read_text().strip() == "hello-slurm"


def test_checkpointable_requeued_by_usr2_resumes(slurm_cluster, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    # The job unpickles _smoke_job.CountTo, so the module must be importable here and in the job (sbatch exports env).
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    from _smoke_job import CountTo

    work = tmp_path / "work"
    work.mkdir()
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm", slurm_max_num_timeout=5)
    executor.update_parameters(timeout_min=60, slurm_partition="debug", slurm_mem="500M", cpus_per_task=1)
    job = executor.submit(CountTo(str(work), n_steps=12, step_s=0.25))

    step_file = work / "step.txt"

    def step() -> int:
        try:
            return int(step_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    slurm_cluster.wait_for(lambda: step() >= 3, 30, f"job {job.job_id} to reach step 3")
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)

    slurm_cluster.wait_for(job.done, 45, f"job {job.job_id} to finish after the requeue")
    assert job.result() == 12
    starts = [line.split() for line in (work / "starts.txt").read_text().splitlines()]
    assert len(starts) == 2, starts
    assert starts[0] == ["0", "0"]
    restart_count, resumed_at = starts[1][0], int(starts[1][1])
    assert restart_count == "1" and resumed_at >= 3, starts  # resumed from the checkpoint, not from scratch
    log = job.stdout() or ""
    assert "Calling checkpoint method" in log + (job.stderr() or "")
    slurm_cluster.wait_for(
        lambda: slurm_cluster.sacct_states(job.job_id) == ["REQUEUED", "COMPLETED"],
        15, f"sacct -D to show job {job.job_id} REQUEUED then COMPLETED",
    )
