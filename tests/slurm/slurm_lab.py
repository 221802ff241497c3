"""What the SLURM tests share: a "lab" (fresh experiment, checkpoint and data roots with the local cluster's defaults,
and ``make`` run in them as a user would), the tiny experiment they submit, and waits and checks on its jobs."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEPS = 100
TINY = f"""\
description: "SLURM test: digits, conv, {STEPS} steps"
data: {{dataset: digits, batch_size: 16}}
model: {{arch: conv}}
diffusion: {{objective: ddpm, T: 50}}
train: {{steps: {STEPS}, log_every: 10, checkpoint_every: 20, device: cpu}}
sample: {{sampler: ddim, steps: 10, n: 16, trajectory: false}}
"""
# The local cluster: partition debug (pre-emptible), no QOS, no GPU for the low-priority jobs.
LOCAL_CLUSTER = """\
slurm:
  partition: debug
  qos: null
  gres: null
  gpus_per_node: 0
  time_min: 10
  sample_time_min: 10
  mem_gb: 1.5
  cpus_per_task: 1
  signal_delay_s: 30
  max_requeues: 5
  setup: []
"""
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
JOB_TIMEOUT = 240  # seconds; generous: the CI machine has 2 shared cores and each job start imports torch


def _experiment(name: str, overrides: list[str] | None = None, cluster: str | None = None, tmp_path=None):
    from ddpm_hpc.config import load_experiment

    if tmp_path is not None:
        (tmp_path / f"{name}.yaml").write_text(TINY)
        if cluster is not None:
            (tmp_path / "_cluster.yaml").write_text(cluster)
    return load_experiment(name, overrides)


@dataclass
class Lab:
    root: Path
    env: dict

    @property
    def exps(self) -> Path:
        return self.root / "experiments"

    @property
    def ckpts(self) -> Path:
        return self.root / "checkpoints"

    def write_experiment(self, name: str, text: str = TINY) -> None:
        (self.exps / f"{name}.yaml").write_text(text)

    def make(self, target: str, exp: str | None = None, set_: str | None = None, check: bool = True,
             step_delay: float = 0.1, **extra) -> subprocess.CompletedProcess:
        args = ["make", "-s", "-C", str(REPO), target]
        if exp:
            args.append(f"EXP={exp}")
        if set_:
            args.append(f"SET={set_}")
        args += [f"{k}={v}" for k, v in extra.items()]
        env = {**self.env, "DDPM_HPC_STEP_DELAY": str(step_delay)}
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def submit(self, name: str, set_: str | None = None, step_delay: float = 0.1) -> tuple[str, str]:
        self.write_experiment(name)
        proc = self.make("submit", name, set_, step_delay=step_delay)
        assert f"submitted {name}: training job" in proc.stdout, proc.stdout
        jobs = self.jobs(name)
        assert [j["kind"] for j in jobs] == ["train", "sample"] and jobs[1]["after"] == f"afterok:{jobs[0]['job_id']}"
        return jobs[0]["job_id"], jobs[1]["job_id"]

    def jobs(self, name: str) -> list[dict]:
        return json.loads((self.exps / name / "jobs.json").read_text())["jobs"]

    def events(self, name: str, kind: str = "train") -> list[dict]:
        path = self.exps / name / "logs" / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [e for e in map(json.loads, lines) if e["kind"] == kind]

    def step(self, name: str) -> int:
        path = self.exps / name / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return json.loads(lines[-1])["step"] if lines else 0

    def log(self, name: str, job_id: str) -> str:
        folder = self.exps / name / "logs"
        return "".join(p.read_text() for p in (folder / f"{job_id}_0_log.out", folder / f"{job_id}_0_log.err")
                       if p.exists())

    def final_tensors(self, name: str) -> dict:
        from safetensors.torch import load_file

        pointer = json.loads((self.ckpts / name / "latest.json").read_text())
        assert pointer["step"] == STEPS, pointer
        return load_file(self.ckpts / name / pointer["file"])


def final_state(cluster, job_id: str) -> str | None:
    states = cluster.sacct_states(job_id)
    last = states[-1].split()[0] if states else None
    return last if last in FINAL else None


def wait_final(cluster, job_id: str, timeout: float = JOB_TIMEOUT) -> str:
    return cluster.wait_for(lambda: final_state(cluster, job_id), timeout, f"job {job_id} to end")


def wait_step(cluster, lab: Lab, name: str, step: int) -> int:
    return cluster.wait_for(lambda: lab.step(name) >= step and lab.step(name), JOB_TIMEOUT,
                            f"{name} to reach step {step}", interval=0.1)


def assert_same_weights(lab: Lab, name: str, reference: dict) -> None:
    import torch

    ours = lab.final_tensors(name)
    assert ours.keys() == reference.keys()
    differ = [k for k in reference if not k.startswith("rng.") and not torch.equal(ours[k], reference[k])]
    assert not differ, f"{name}: tensors differ from the uninterrupted run: {differ[:5]}"


def assert_resumed_where_it_stopped(lab: Lab, name: str, job_id: str, stop_events=("requeued",)) -> list[int]:
    """Every restart begins at the step the previous run saved (events written by the job itself and the
    trainer's own 'resuming ... (step N/...)' log line), and the last run finishes."""
    events = lab.events(name)
    starts = [e for e in events if e["event"] == "start"]
    stops = [e for e in events if e["event"] in stop_events]
    assert len(starts) == len(stops) + 1 >= 2, events
    for stop, start in zip(stops, starts[1:]):
        assert start["step"] == stop["step"] > 0, events
        assert f"resuming {name} from " in lab.log(name, job_id) and f"(step {stop['step']}/{STEPS})" in \
            lab.log(name, job_id)
    assert [e["restart"] for e in starts] == list(range(len(starts)))
    assert events[-1]["event"] == "finished" and events[-1]["step"] == STEPS, events
    return [s["step"] for s in stops]


def make_lab(tmp_path_factory, prefix: str) -> Lab:
    """Fresh experiment/checkpoint/data roots and the local cluster defaults; jobs inherit ``env``."""
    root = tmp_path_factory.mktemp(prefix)
    (root / "experiments").mkdir()
    (root / "experiments" / "_cluster.yaml").write_text(LOCAL_CLUSTER)
    env = {**os.environ, "DDPM_HPC_EXPERIMENTS": str(root / "experiments"),
           "DDPM_HPC_CHECKPOINTS": str(root / "checkpoints"), "DDPM_HPC_DATA": str(root / "data"),
           "DDPM_HPC_CLUSTER_CONFIG": str(root / "experiments" / "_cluster.yaml"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return Lab(root, env)
