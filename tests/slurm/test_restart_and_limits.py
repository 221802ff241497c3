"""``train.restart=true`` across requeues, and requests the partition can never run, on the real local cluster
(tests/slurm/cluster.sh: partition ``debug`` with MaxTime 60 min, EnforcePartLimits=NO, one node with gres gpu:1).

- A submission with ``train.restart=true`` starts over once: a USR2 requeue resumes from the saved step and exactly
  one ``.old-*`` archive exists.
- ``make submit`` refuses a request beyond the partition's limits in one line (exit 2, nothing submitted or created).
- ``make status`` says "will not start" for a job pending on a reason that waiting does not clear.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_jobs import REPO, STEPS, Lab, make_lab, wait_final, wait_step


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
    assert [s["step"] for s in starts] == [20, stopped_at], events  # the first run found the old run's step 20
