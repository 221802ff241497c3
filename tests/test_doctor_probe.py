"""The probe job of ``make doctor SUBMIT=1`` without SLURM: its sbatch parameters, the precisions it times, its USR2
self-test against stand-in ``scancel`` scripts (real signals, a fake command), the micro-benchmark on this CPU, the
login side's wait (the queue query mocked: this test has no SLURM) and what its JSON answer means. The real probe
on the local cluster is tests/slurm/test_doctor_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ddpm_hpc.devices import native_bf16
from jobs import doctor, doctor_probe
from jobs.doctor_probe_checks import probe_checks

REPO = Path(__file__).resolve().parents[1]
TINY = """\
data: {dataset: digits, batch_size: 4}
model: {arch: conv}
diffusion: {objective: ddpm, T: 50}
train: {steps: 10, device: cpu}
"""


@pytest.fixture
def exps(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "experiments"
    root.mkdir()
    (root / "tiny.yaml").write_text(TINY)
    (root / "_cluster.yaml").write_text((REPO / "experiments" / "_cluster.yaml").read_text())
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(root))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    return root


def _exp(*overrides):
    from ddpm_hpc.config import load_experiment

    return load_experiment("tiny", list(overrides))


def test_probe_asks_for_what_the_experiment_asks_but_briefly(exps, tmp_path):
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    exp = _exp("slurm.gres=gpu:ampere:1", "slurm.gpus_per_node=4", "slurm.time_min=600", "data.batch_size=4")
    params = doctor.probe_parameters(exp)
    assert params["time"] == doctor.PROBE_TIME_MIN and params["job_name"] == "ddpm-doctor"
    assert params["gres"] == "gpu:ampere:1" and params["ntasks_per_node"] == 1  # one GPU of the same type
    assert "requeue" not in params["additional_parameters"] and params["partition"] == "ug-gpu-small"
    script = _make_sbatch_string(command="python -u -m submitit.core._submit x", folder=tmp_path, **params)
    assert "#SBATCH --signal=USR2@" in script and "#SBATCH --qos=short" in script
    assert "#SBATCH --no-requeue\n" in script and "#SBATCH --requeue\n" not in script
    assert "srun" in script  # Python runs as the srun task: where --signal=USR2@N (without B:) is delivered
    assert params["signal_delay_s"] * 2 <= params["time"] * 60
    late = doctor.probe_parameters(_exp("slurm.time_min=600", "slurm.signal_delay_s=900"))
    assert late["signal_delay_s"] == 200  # not 900 s before a 10-minute limit: that warning would come at once


@pytest.mark.parametrize("device, capability, cpu_bf16, expected", [
    ("cuda", (6, 1), False, ["fp32", "fp16"]),  # GTX 1080
    ("cuda", (7, 5), False, ["fp32", "fp16"]),  # RTX 2080 Ti: no native bf16
    ("cuda", (8, 0), False, ["fp32", "fp16", "bf16"]),  # A100
    ("cpu", None, True, ["fp32", "bf16"]),  # AVX512-BF16 / AMX
    ("cpu", None, False, ["fp32"]),
])
def test_precisions_timed(device, capability, cpu_bf16, expected):
    assert doctor_probe.precisions_to_bench(device, capability, cpu_bf16, native_bf16) == expected


def _fake_scancel(folder: Path, body: str) -> None:
    folder.mkdir(exist_ok=True)
    script = folder / "scancel"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {folder}/args\n{body}\n")
    script.chmod(0o755)


def test_usr2_self_test_sees_a_real_signal(tmp_path, monkeypatch):
    """A stand-in scancel sends a real USR2 to its parent (this process), as slurmstepd does to the srun task."""
    bin_dir = tmp_path / "bin"
    _fake_scancel(bin_dir, "kill -USR2 $PPID")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    before = signal.getsignal(signal.SIGUSR2)
    result = doctor_probe.usr2_self_test("123", wait_s=10)
    assert result["arrived"] is True and result["after_s"] < 10
    assert (bin_dir / "args").read_text().split() == ["--signal=USR2", "123"]  # all steps: not --batch, not --full
    assert signal.getsignal(signal.SIGUSR2) is before  # the job's handler is back


def test_usr2_self_test_reports_a_signal_that_never_comes(exps, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_scancel(bin_dir, "true")  # accepted, but nothing is delivered
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = doctor_probe.usr2_self_test("123", wait_s=0.5)
    assert result["arrived"] is False and result["after_s"] is None
    check = probe_checks(_exp("slurm.gres=null", "slurm.gpus_per_node=0"), {"usr2": result, "host": "n1"})
    usr2 = next(c for c in check if c.topic == "pre-emption warning")
    assert usr2.status == "problem" and "did not reach" in usr2.message
    assert doctor_probe.usr2_self_test(None)["error"].startswith("not inside a SLURM job")


def test_benchmark_on_this_cpu(exps):
    """fp32 (and bf16 where this CPU has it) of the tiny experiment: img/s from 2 timed steps."""
    exp = _exp()
    note: list[str] = []
    result = doctor_probe.bench_precision(exp.to_json(), "fp32", steps=2, warmup=1, note=note)
    assert result["device"] == "cpu" and result["batch"] == 4 and result["img_per_s"] > 0 and result["loss_finite"]
    assert note == []
    bad = json.loads(exp.to_json())
    bad["train"]["precision"] = "fp8"  # not a precision train.precision offers: the probe records the error
    probe = doctor_probe.DoctorProbe(exp.to_json(), {}, "x", steps=1, warmup=0)
    with pytest.raises(Exception, match="precision"):
        doctor_probe.bench_precision(json.dumps(bad), "fp8", 1, 0, [])
    bench = probe._benchmark()
    assert bench["experiment"] == "tiny" and bench["results"][0]["precision"] == "fp32"


def test_benchmark_uses_digits_when_the_dataset_is_missing(exps, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_HPC_DATA", str(tmp_path / "nothing"))
    note: list[str] = []
    result = doctor_probe.bench_precision(_exp("data.dataset=mnist").to_json(), "fp32", 1, 0, note)
    assert result["img_per_s"] > 0 and "mnist is not on this node" in note[0]


def test_login_side_waits_for_a_complete_answer(tmp_path, monkeypatch):
    """The queue is mocked (no SLURM here): a job that keeps running, then one that has left the queue."""
    answer = tmp_path / "probe.json"
    lines: list[str] = []
    monkeypatch.setattr(doctor, "_queue_state", lambda job_id: "RUNNING")
    answer.write_text(json.dumps({"complete": False}))
    data, still = doctor.wait_for_answer("5", answer, timeout_s=0.3, out=lines.append, poll_s=0.1)
    assert data == {"complete": False} and still == "RUNNING" and "probe job 5: RUNNING" in lines[0]
    answer.write_text(json.dumps({"complete": True, "host": "n1"}))
    assert doctor.wait_for_answer("5", answer, 10, lines.append)[0]["host"] == "n1"
    monkeypatch.setattr(doctor, "_queue_state", lambda job_id: None)
    answer.unlink()
    start = time.monotonic()
    assert doctor.wait_for_answer("5", answer, 60, lines.append, poll_s=0.05, grace_s=0.2) == (None, None)
    assert time.monotonic() - start < 5
    checks = doctor.answer_checks(_exp_default(), "5", None, None, tmp_path, answer)
    assert checks[0].status == "problem" and "ended without an answer" in checks[0].message
    (tmp_path / "5_0_log.err").write_text("srun: error: c1: task 0: Killed\n")
    started = {"complete": False, "stage": "USR2 self-test", "host": "n1", "job_id": "5"}
    checks = doctor.answer_checks(_exp_default(), "5", started, None, tmp_path, answer)
    assert checks[0].topic == "pre-emption warning" and checks[0].status == "problem"
    assert "killed the job instead of reaching the Python" in checks[0].message and "Killed" in checks[0].message


def _exp_default():
    from ddpm_hpc.config import Experiment

    return Experiment(name="x")


def test_what_an_answer_means():
    exp = _exp_default()  # NCC defaults: gres gpu:1
    answer = {"host": "gpu7", "job_id": "9", "partition": "ug-gpu-small", "scontrol": None,
              "usr2": {"arrived": True, "after_s": 0.02, "command": "scancel --signal=USR2 9"},
              "torch": {"torch": "2.14.1+cu130", "cuda": "13.0", "arch_list": ["sm_75", "sm_80"], "driver": "580.1"},
              "gpus": [{"index": 0, "name": "Tesla P100", "capability": "6.0", "sm": "sm_60", "native_bf16": False,
                        "usable": False}], "allocated": "CUDA_VISIBLE_DEVICES=0",
              "benchmark": {"experiment": "x", "arch": "unet", "results": [], "error": "UnsupportedGPU: the GPU..."}}
    checks = {c.topic: c for c in probe_checks(exp, answer)}
    assert checks["pre-emption warning"].status == "ok"
    assert checks["scontrol on the node"].status == "problem"
    assert checks["GPU 0"].status == "problem" and "sm_60" in checks["GPU 0"].message
    assert checks["device"].status == "problem"
    answer.update(gpus=[], scontrol="/usr/bin/scontrol", benchmark={
        "experiment": "x", "arch": "unet", "note": None, "results": [
            {"precision": "fp32", "device": "cuda:0", "batch": 32, "steps": 20, "img_per_s": 812.5, "ms_per_step": 39.4,
             "loss_finite": True}, {"precision": "fp16", "error": "ConfigError: ..."}]})
    checks = {c.topic: c for c in probe_checks(exp, answer)}
    node = checks["GPUs on the node"]
    assert node.status == "problem" and "CUDA_VISIBLE_DEVICES=0" in node.message
    assert checks["benchmark fp32"].status == "ok" and "812.5 img/s" in checks["benchmark fp32"].message
    assert checks["benchmark fp16"].status == "warning"
