"""``train.restart=true`` across requeues, and requests the partition can never run, on the real local cluster
(tests/slurm/cluster.sh: partition ``debug`` with MaxTime 60 min, EnforcePartLimits=NO, one node with gres gpu:1).

- A submission with ``train.restart=true`` starts over once: a USR2 requeue resumes from the saved step and exactly
  one ``.old-*`` archive exists.
- ``make submit`` refuses a request beyond the partition's limits in one line (exit 2, nothing submitted or created).
- ``make status`` says "will not start" for a job pending on a reason that waiting does not clear.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_lab import REPO, STEPS, Lab, make_lab, wait_final, wait_step


@pytest.fixture(scope="module")
def lab(slurm_cluster, tmp_path_factory) -> Lab:
    return make_lab(tmp_path_factory, "slurm-restart")


def archives(lab: Lab, name: str) -> tuple[list[str], list[str]]:
    return (sorted(p.name for p in lab.ckpts.glob(f"{name}.old-*")),
            sorted(p.name for p in (lab.exps / name).glob("old-*")))


@pytest.mark.slurm
def test_restart_true_starts_over_once_and_its_requeue_resumes(slurm_cluster, lab):
    name = "restart"
    lab.write_experiment(name)
    # an earlier run to start over from: 20 steps trained here, on the login node, as make local would
    subprocess.run([str(REPO / ".venv" / "bin" / "ddpm-hpc"), "train", name, "train.steps=20"], env=lab.env,
                   check=True, capture_output=True, timeout=300)
    assert (lab.ckpts / name / "latest.json").is_file() and archives(lab, name) == ([], [])
    proc = lab.make("submit", name, "train.restart=true", step_delay=0.1)
    train_id = lab.jobs(name)[0]["job_id"]
    assert f"submitted {name}: training job {train_id}" in proc.stdout, proc.stdout
    wait_step(slurm_cluster, lab, name, 30)  # past the old run's 20 steps: metrics.jsonl is the new run's
    subprocess.run(["scancel", "--signal=USR2", train_id], check=True, timeout=30)
    assert wait_final(slurm_cluster, train_id) == "COMPLETED", lab.log(name, train_id)
    log = lab.log(name, train_id)
    events = lab.events(name)
    stopped_at = next(e["step"] for e in events if e["event"] == "requeued")
    assert log.count("train.restart=true: moved the previous run") == 1, log
    assert f"resuming {name} from " in log and f"(step {stopped_at}/{STEPS})" in log, log
    # the save line of a job says what the job does next, not the workstation's "run the same command again"
    assert f"SIGUSR2 received: saved step {stopped_at} to " in log and \
        "; the job requeues itself and resumes from there (restart 1 of at most 5)" in log, log
    assert "running the same command again" not in log
    ckpt_old, out_old = archives(lab, name)
    assert len(ckpt_old) == 1 and len(out_old) == 1, (ckpt_old, out_old)
    assert sorted(p.name for p in (lab.ckpts / ckpt_old[0]).glob("step-*")) == ["step-000000020.safetensors"]
    starts = [e for e in events if e["event"] == "start"]
    assert [s["step"] for s in starts] == [0, stopped_at], events  # the first run started over


@pytest.mark.slurm
def test_request_beyond_max_time_is_refused_in_one_line(slurm_cluster, lab):
    """The cluster would accept it (EnforcePartLimits=NO) and leave it PENDING (PartitionTimeLimit) forever."""
    lab.write_experiment("toolong")
    proc = lab.make("submit", "toolong", "slurm.time_min=120", check=False)
    errors = [ln for ln in proc.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", ln)]  # make's own
    assert proc.returncode != 0 and errors == [
        "error: experiment toolong: slurm.time_min=120 is above partition debug's MaxTime of 60 min (scontrol show "
        "partition debug): the job would wait forever (PartitionTimeLimit); set slurm.time_min=60 or less, or use "
        "another slurm.partition"], proc.stderr
    assert not (lab.exps / "toolong").exists()  # nothing submitted, nothing created
    direct = subprocess.run([str(REPO / ".venv" / "bin" / "ddpm-hpc"), "submit", "toolong", "slurm.time_min=120"],
                            env=lab.env, capture_output=True, text=True, timeout=120)
    assert direct.returncode == 2


@pytest.mark.slurm
def test_status_says_a_job_beyond_max_time_will_not_start(slurm_cluster, lab, monkeypatch):
    """A job that reached the queue before the check (a raw sbatch, or a make submit of an older version)."""
    from jobs import registry

    job_id = subprocess.run(["sbatch", "--parsable", "-J", "ddpm-stuck", "-p", "debug", "--time=120", "--mem=100M",
                             "-o", "/dev/null", "--wrap", "true"], capture_output=True, text=True, check=True,
                            timeout=30).stdout.strip().split(";")[0]
    try:
        monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(lab.exps))
        registry.add("stuck", {"job_id": job_id, "kind": "train", "submitted_at": registry.now(), "overrides": [],
                               "after": None, "steps": STEPS, "cancelled_at": None, "cancelled_by": None,
                               "world_size": 1})
        status = slurm_cluster.wait_for(lambda: (s := lab.make("status", "stuck").stdout) and "will not start" in s
                                        and s, 30, "make status to say will not start")
        assert (f"train {job_id} PENDING (will not start: PartitionTimeLimit: its time limit (120 min) is above "
                f"partition debug's MaxTime (60 min); make cancel EXP=stuck, then make submit EXP=stuck "
                f"SET=\"slurm.time_min=60\" (or another slurm.partition))") in status, status
    finally:
        subprocess.run(["scancel", job_id], timeout=30)
    assert wait_final(slurm_cluster, job_id, timeout=60) == "CANCELLED"


def test_the_docs_cluster_file_is_the_tests_cluster_file():
    """docs/slurm.md says its "partition without GPUs" cluster file is the SLURM tests' settings: it must be, so that
    its examples run as written on the local cluster (time_min within debug's MaxTime of 60 min)."""
    import yaml
    from slurm_lab import LOCAL_CLUSTER

    docs = (REPO / "docs" / "slurm.md").read_text()
    block = re.search(r"```yaml\n(# my_cluster\.yaml.*?)```", docs, re.S)
    assert block, "docs/slurm.md has no my_cluster.yaml block"
    assert yaml.safe_load(block.group(1)) == yaml.safe_load(LOCAL_CLUSTER)
    assert yaml.safe_load(LOCAL_CLUSTER)["slurm"]["time_min"] <= 60


# -- without SLURM: what the job passes to the trainer ----------------------------------------------------------------

def test_the_jobs_save_line_says_what_the_job_does_next(monkeypatch):
    from types import SimpleNamespace

    from jobs.tasks import TrainJob

    job, exp = TrainJob("{}", {}, max_requeues=2), SimpleNamespace(name="x")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert job._stop_advice(exp)("SIGUSR2") == ("the job requeues itself and resumes from there (restart 1 of at "
                                                "most 2)")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert job._stop_advice(exp)("SIGUSR2") == ("requeues used up (slurm.max_requeues=2): make submit EXP=x "
                                                "continues from there")
    assert job._stop_advice(exp)("SIGTERM").endswith("if it was cancelled, make submit EXP=x continues from there")


def test_the_restart_token_survives_the_requeue_submission():
    from jobs.tasks import TrainJob

    job = TrainJob("{}", {}, 3, 0.5, restart_token="2026-12-03T07:00:00+0000 ab12cd34")
    assert job._fresh().restart_token == job.restart_token and job._fresh().step_delay_s == 0.5
    old = TrainJob("{}", {}, 3)
    del old.restart_token  # a job pickled before the token existed
    assert old._token() is None and old._fresh().restart_token is None
