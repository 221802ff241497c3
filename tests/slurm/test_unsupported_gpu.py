"""A GPU that the installed torch cannot drive ends the job at once: one line in the events, UnsupportedGPU's own exit
code, FAILED in sacct, never requeued (a requeue would land on the same kind of node).

Two paths, each in a real job on the local SLURM cluster through ``make submit``:

- the GPU was allocated but torch cannot use it: the local cluster's fake GPU (gres.conf ``File=/dev/null``) makes
  SLURM set CUDA_VISIBLE_DEVICES=0, and with no NVIDIA driver here ``torch.cuda.is_available()`` is False, exactly what
  a CUDA 13 build sees on a node with an older driver. No mock.
- a GPU whose sm the build lacks (a Pascal P100, sm_60, under the CUDA 13.0 build): a mock of a GPU this machine lacks,
  through the test-only hook ``tests/slurm/_fake_gpu/sitecustomize.py`` (DDPM_TEST_FAKE_GPU), which replaces only the
  capability query; the arch list is the real one of the installed torch.

The first test runs the job class in this process (no SLURM) with the same mock, monkeypatched.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slurm_lab import LOCAL_CLUSTER, _experiment, make_lab, wait_final

HERE = Path(__file__).resolve().parent
P100 = "Tesla P100-PCIE-16GB:6.0"


def _fake_p100(monkeypatch):
    from ddpm_hpc import devices

    monkeypatch.setattr(devices, "cuda_count", lambda: 1)
    monkeypatch.setattr(devices, "device_capability", lambda index: (6, 0))
    monkeypatch.setattr(devices, "device_name", lambda index: "Tesla P100-PCIE-16GB")
    monkeypatch.setattr(devices, "arch_list", lambda: ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"])


def test_train_job_on_an_unsupported_gpu_exits_with_its_code_in_process(tmp_path, monkeypatch):
    """The job class itself, without SLURM: SystemExit with UnsupportedGPU's code, a 'failed' event, no requeue."""
    pytest.importorskip("submitit")
    from ddpm_hpc.errors import UnsupportedGPU
    from jobs import tasks

    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    requeued = []
    monkeypatch.setattr(tasks, "requeue", requeued.append)
    _fake_p100(monkeypatch)
    exp = _experiment("x", ["train.device=auto"], LOCAL_CLUSTER, tmp_path)
    for job in (tasks.TrainJob(exp.to_json(), tasks.current_roots(), 3),
                tasks.SampleJob(exp.to_json(), tasks.current_roots(), 3)):
        with pytest.raises(SystemExit) as info:
            job()
        assert info.value.code == UnsupportedGPU.exit_code == 5
    events = [json.loads(ln) for ln in (tmp_path / "x/logs/events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["event"]) for e in events] == [("train", "failed"), ("sample", "failed")]
    assert events[0]["message"].startswith("UnsupportedGPU: the GPU cuda:0 (Tesla P100-PCIE-16GB, sm_60)")
    assert requeued == []


def _sacct(job_id: str) -> list[tuple[str, str]]:
    out = subprocess.run(["sacct", "-D", "-n", "-X", "-P", "-o", "State,ExitCode", "-j", job_id],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def _submit_and_check(cluster, lab, name: str, set_: str, expected: tuple[str, ...]) -> None:
    from ddpm_hpc.errors import UnsupportedGPU

    lab.write_experiment(name)
    lab.make("submit", name, set_)
    train_id, sample_id = (j["job_id"] for j in lab.jobs(name))
    assert wait_final(cluster, train_id) == "FAILED", lab.log(name, train_id)
    code = f"{UnsupportedGPU.exit_code}:0"
    cluster.wait_for(lambda: _sacct(train_id) == [("FAILED", code)], 20, f"sacct to show job {train_id} FAILED {code}")
    assert wait_final(cluster, sample_id) == "CANCELLED"  # afterok never satisfied: the sampling job never runs
    events = lab.events(name)
    assert [e["event"] for e in events] == ["failed"], events  # no start, no requeue
    log = lab.log(name, train_id)
    for part in (*expected, "UnsupportedGPU"):
        assert part in events[0]["message"] and part in log, (part, events[0]["message"])
    assert len(events[0]["message"].splitlines()) == 1


@pytest.mark.slurm
def test_allocated_gpu_that_torch_cannot_use_fails_without_requeue(slurm_cluster, tmp_path_factory):
    lab = make_lab(tmp_path_factory, "gpu-unusable")
    _submit_and_check(slurm_cluster, lab, "nodriver",
                      "train.device=auto slurm.partition=gpu slurm.gres=gpu:1 slurm.gpus_per_node=1",
                      ("given a GPU (", "torch.cuda.is_available() is False", "train.device=cpu"))


@pytest.mark.slurm
def test_gpu_without_kernels_in_the_build_fails_without_requeue(slurm_cluster, tmp_path_factory):
    lab = make_lab(tmp_path_factory, "gpu-pascal")
    lab.env["PYTHONPATH"] = ":".join(p for p in (str(HERE / "_fake_gpu"), lab.env.get("PYTHONPATH")) if p)
    lab.env["DDPM_TEST_FAKE_GPU"] = P100
    _submit_and_check(slurm_cluster, lab, "pascal", "train.device=auto",
                      ("Tesla P100-PCIE-16GB, sm_60", "slurm.gres=gpu:ampere:1", "CUDA 12.6 builds"))
