"""Data-parallel training jobs on the real local cluster (tests/slurm/cluster.sh): two CPU tasks, gloo, DDP.

``slurm.tasks_per_node: 2`` with no GPU makes ``make submit`` start two tasks (``srun --ntasks-per-node=2``), each
one rank of the same training run (jobs/tasks.py). A tiny seed U-Net (BatchNorm -> synchronised over the ranks)
trains for a few dozen steps. The interrupted run must end with weights ``torch.equal`` to the uninterrupted one:
same world size, hence the same float operations in the same order (with two ranks the gloo all-reduce is a single
addition, a + b == b + a exactly), and the checkpoint carries every bit of state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_lab import Lab, make_lab, wait_final, wait_step

STEPS = 40
DDP = f"""\
description: "SLURM test: 2 CPU ranks, seed U-Net, {STEPS} steps"
data: {{dataset: digits, batch_size: 8}}
model: {{arch: seed_unet, channels: [8, 8, 16, 16, 16]}}
diffusion: {{objective: ddpm, T: 50}}
train: {{steps: {STEPS}, lr: 0.001, ema_decay: 0.9, log_every: 5, checkpoint_every: 10, checkpoint_minutes: 0,
         device: cpu}}
sample: {{sampler: ddim, steps: 10, n: 16, trajectory: false}}
slurm: {{tasks_per_node: 2, mem_gb: 3}}
"""
DELAY = 0.15  # s per step: the run takes long enough to be interrupted mid-way


@pytest.fixture(scope="module")
def lab(slurm_cluster, tmp_path_factory) -> Lab:
    return make_lab(tmp_path_factory, "slurm-ddp")


def submit(lab: Lab, name: str) -> tuple[str, str]:
    lab.write_experiment(name, DDP)
    proc = lab.make("submit", name, step_delay=DELAY)
    assert f"submitted {name}: training job" in proc.stdout and "2 ranks" in proc.stdout, proc.stdout
    train, sample = lab.jobs(name)
    assert train["world_size"] == 2 and sample["world_size"] == 1
    return train["job_id"], sample["job_id"]


def rank_log(lab: Lab, name: str, job_id: str, rank: int) -> str:
    folder = lab.exps / name / "logs"
    return "".join(p.read_text() for p in (folder / f"{job_id}_{rank}_log.out", folder / f"{job_id}_{rank}_log.err")
                   if p.exists())


def final_tensors(lab: Lab, name: str) -> dict:
    from safetensors.torch import load_file

    pointer = json.loads((lab.ckpts / name / "latest.json").read_text())
    assert pointer["step"] == STEPS, pointer
    return load_file(lab.ckpts / name / pointer["file"])


@pytest.fixture(scope="module")
def reference(slurm_cluster, lab) -> dict:
    """An uninterrupted 2-task run (and its 1-task sampling job): its final tensors are the reference."""
    train_id, sample_id = submit(lab, "ddp-reference")
    assert wait_final(slurm_cluster, train_id) == "COMPLETED", rank_log(lab, "ddp-reference", train_id, 0)
    assert wait_final(slurm_cluster, sample_id) == "COMPLETED", lab.log("ddp-reference", sample_id)
    return {"tensors": final_tensors(lab, "ddp-reference"), "train": train_id, "sample": sample_id}


@pytest.mark.slurm
def test_two_task_job_completes_with_one_set_of_outputs(slurm_cluster, lab, reference):
    name, train_id = "ddp-reference", reference["train"]
    events = lab.events(name)
    assert [e["event"] for e in events] == ["start", "finished"], events  # rank 0 only: one line per event
    assert events[0]["world_size"] == 2
    log0, log1 = rank_log(lab, name, train_id, 0), rank_log(lab, name, train_id, 1)
    assert "rank 0 of 2" in log0 and f"finished {name} at step {STEPS}" in log0
    assert "rank 1 of 2" in log1 and f"rank 1: finished at step {STEPS}" in log1
    assert "training ddp-reference" not in log1  # rank 0 logs the progress
    lines = (lab.exps / name / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(5, STEPS + 1, 5))  # written once, by rank 0
    status = lab.make("status", name).stdout
    assert f"train {train_id} COMPLETED  world 2" in status and f"step {STEPS}/{STEPS}" in status, status
    logs = lab.make("logs", name).stdout  # the latest job: the sampling job, one task
    assert f"{reference['sample']}_0_log.out" in logs and "ranks" not in logs.splitlines()[0], logs
    rank1 = lab.make("logs", name, RANK="1").stdout  # the latest job that has a rank 1: training
    assert f"{train_id}_1_log.out" in rank1 and "rank 1 of 2" in rank1, rank1
    assert f"job {train_id} has 2 ranks; this is rank 1" in rank1, rank1
    assert list((lab.exps / name / "samples").glob(f"step{STEPS:07d}-ddim10-*.png"))  # 1-task sampling job


@pytest.mark.slurm
def test_usr2_on_a_two_task_job_requeues_and_ends_with_the_same_weights(slurm_cluster, lab, reference):
    import torch

    name = "ddp-usr2"
    train_id, sample_id = submit(lab, name)
    wait_step(slurm_cluster, lab, name, 10)
    subprocess.run(["scancel", "--signal=USR2", train_id], check=True, timeout=30)
    assert wait_final(slurm_cluster, train_id) == "COMPLETED", rank_log(lab, name, train_id, 0)
    events = lab.events(name)
    assert [e["event"] for e in events] == ["start", "requeued", "start", "finished"], events
    stopped_at = events[1]["step"]
    assert 10 <= stopped_at < STEPS and events[2]["step"] == stopped_at and events[2]["restart"] == 1, events
    log0, log1 = rank_log(lab, name, train_id, 0), rank_log(lab, name, train_id, 1)
    assert f"SIGUSR2 received: saved step {stopped_at}" in log0
    assert f"resuming {name} from " in log0 and f"(step {stopped_at}/{STEPS})" in log0
    assert f"rank 1: interrupted at step {stopped_at}" in log1  # both ranks stopped at the same step
    slurm_cluster.wait_for(lambda: slurm_cluster.sacct_states(train_id) == ["REQUEUED", "COMPLETED"], 15,
                           f"sacct -D of {train_id}")
    ours, ref = final_tensors(lab, name), reference["tensors"]
    assert ours.keys() == ref.keys()
    # Bit for bit, except the smoothed loss: each rank smooths its own losses and the ranks average them at every log
    # line and at every save. Averaging is linear, so an extra save between two log lines (the USR2 one) changes
    # the result only by float rounding; its tolerance is far below any real difference (one step moves it ~1e-3).
    exact = [k for k in ref if not k.startswith("rng.") and k != "train.loss_smooth"]
    differ = [k for k in exact if not torch.equal(ours[k], ref[k])]
    assert not differ, f"tensors differ from the uninterrupted 2-task run: {differ[:5]}"
    torch.testing.assert_close(ours["train.loss_smooth"], ref["train.loss_smooth"], rtol=1e-5, atol=0)
    assert wait_final(slurm_cluster, sample_id) == "COMPLETED", lab.log(name, sample_id)
