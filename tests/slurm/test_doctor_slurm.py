"""``make doctor SUBMIT=1`` on the real local cluster (tests/slurm/cluster.sh): the login-node checks read the real
partitions, the probe job runs on node c1 with the experiment's ``slurm:`` settings, its USR2 self-test
(``scancel --signal=USR2 <own job>``) reaches the handler in the Python process, it finds ``scontrol``, times the
tiny model, and writes its JSON answer, which the login side reads back and keeps in ``experiments/_doctor``."""

from __future__ import annotations

import json
import subprocess

import pytest

from slurm_lab import REPO, TINY, make_lab

pytestmark = pytest.mark.slurm


def _doctor(lab, settings: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    args = ["make", "-s", "-C", str(REPO), "doctor", "EXP=probe", f"SET={settings}", "SUBMIT=1", "WAIT=4"]
    proc = subprocess.run(args, capture_output=True, text=True, env=lab.env, timeout=400)
    return proc, [line.split()[3] for line in proc.stdout.splitlines() if line.startswith("submitted probe job")]


def test_doctor_submits_a_probe_that_sees_usr2(slurm_cluster, tmp_path_factory):
    lab = make_lab(tmp_path_factory, "doctor-lab")
    lab.write_experiment("probe", TINY)
    proc, job_ids = _doctor(lab, "data.batch_size=4")
    out = proc.stdout
    try:
        assert proc.returncode == 0, f"{out}\n{proc.stderr}"
        assert "ok       SLURM: slurm-wlm 22.05.8" in out
        assert "ok       partition debug: (default) MaxTime 01:00:00" in out
        assert "ok       slurm.partition: debug exists, State UP" in out
        assert "ok       pre-emption warning: USR2 reached the Python process" in out, out
        folder = lab.exps / "_doctor"
        reports = sorted(folder.glob("*[0-9].json"))
        assert len(reports) == 1 and len(job_ids) == 1
        report = json.loads(reports[0].read_text())
        answer = json.loads((folder / f"{report['stamp']}-probe.json").read_text())  # written by the job itself
        assert report["probe"]["answer"] == answer and report["probe"]["job_id"] == job_ids[0] == answer["job_id"]
        assert answer["complete"] and answer["partition"] == "debug" and answer["host"]
        assert answer["usr2"]["arrived"] is True and answer["usr2"]["command"] == f"scancel --signal=USR2 {job_ids[0]}"
        assert answer["usr2"]["handler_before"].endswith("checkpoint_and_try_requeue")  # submitit's, put back after
        assert answer["scontrol"].endswith("/scontrol")
        fp32 = answer["benchmark"]["results"][0]
        assert fp32["precision"] == "fp32" and fp32["device"] == "cpu" and fp32["img_per_s"] > 0
        assert fp32["steps"] == 20 and fp32["batch"] == 4
        assert {c["topic"] for c in report["checks"]} >= {"SLURM", "slurm.partition", "pre-emption"}
        usr2 = next(c for c in report["probe"]["checks"] if c["topic"] == "pre-emption warning")
        assert usr2["status"] == "ok"
        assert slurm_cluster.wait_for(lambda: (slurm_cluster.sacct_states(job_ids[0]) or [""])[-1] == "COMPLETED",
                                      30, "the probe job to be COMPLETED in sacct")
    finally:
        for job_id in job_ids:  # a probe that is still there (a failed assertion) must not linger on the shared node
            subprocess.run(["scancel", job_id], capture_output=True)


def test_probe_reports_a_gpu_that_torch_cannot_use(slurm_cluster, tmp_path_factory):
    """The local cluster's GPU is a gres with File=/dev/null: SLURM sets CUDA_VISIBLE_DEVICES=0 but there is no NVIDIA
    driver, what a CUDA 13 build sees on a node whose driver is too old. No mock: the probe must say so, exit 1."""
    lab = make_lab(tmp_path_factory, "doctor-gpu-lab")
    lab.write_experiment("probe", TINY)
    proc, job_ids = _doctor(lab, "slurm.gres=gpu:1 slurm.gpus_per_node=1 train.device=auto data.batch_size=4")
    try:
        assert "doctor] Error 1" in proc.stderr, f"{proc.stdout}\n{proc.stderr}"  # ddpm-hpc doctor exited 1
        assert "PROBLEM  GPUs on the node: the job was given a GPU (" in proc.stdout, proc.stdout
        assert "PROBLEM  device: UnsupportedGPU: this job was given a GPU" in proc.stdout
        assert "ok       pre-emption warning: USR2 reached the Python process" in proc.stdout
    finally:
        for job_id in job_ids:
            subprocess.run(["scancel", job_id], capture_output=True)
