"""Sweeps as job arrays (jobs/sweep.py) on the real local cluster, through ``make``: a 3-member sweep throttled to
2 tasks at once, one member interrupted with USR2 on its array task and compared bit for bit with the same member
trained locally, every member's sampling task writing its grid, and ``make status|cancel SWEEP=`` on a live sweep.
The members are test_jobs.py's tiny experiment (digits, two-layer conv net, 100 steps) with three learning rates."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from test_jobs import FINAL, REPO, STEPS, assert_resumed_where_it_stopped, assert_same_weights, make_lab, wait_final

TRIO = "base: tiny\ngrid: {train.lr: [1.0e-3, 2.0e-3, 3.0e-3]}\nslurm: {array_parallelism: 2}\n"
MEMBERS = ["trio-lr1e-3", "trio-lr2e-3", "trio-lr3e-3"]
INTERRUPTED = MEMBERS[1]


def squeue_tasks(array_id: str) -> dict[str, str]:
    """Task id -> state of every task of the array squeue still lists (one line per task: -r)."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-o", "%i|%T"], capture_output=True, text=True,
                         timeout=30).stdout
    return dict(line.split("|") for line in out.split() if "|" in line)


def wait_task_final(cluster, job_id: str) -> str:
    """Like test_jobs.wait_final, for array tasks that may never have started: sacct has no row of their own for
    those, and jobs.slurm.sacct (what make status reads) gives them the array's row that covers them."""
    from jobs.slurm import sacct

    def final():
        rows = sacct([job_id])[job_id]
        state = rows[-1].state.split()[0] if rows else None
        return state if state in FINAL else None

    return cluster.wait_for(final, 240, f"array task {job_id} to end")


@pytest.fixture(scope="module")
def sweep_lab(slurm_cluster, tmp_path_factory):
    lab = make_lab(tmp_path_factory, "sweep-lab")
    lab.write_experiment("tiny")
    (lab.exps / "sweeps").mkdir()
    (lab.exps / "sweeps" / "trio.yaml").write_text(TRIO)
    (lab.exps / "sweeps" / "duo.yaml").write_text(TRIO.replace(", 3.0e-3", ""))
    return lab


def local_reference(lab, member: str) -> dict:
    """The same member trained here, uninterrupted, from its generated YAML in a root of its own."""
    from safetensors.torch import load_file

    root = lab.root / "local"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / f"{member}.yaml").write_text((lab.exps / f"{member}.yaml").read_text())
    env = {**lab.env, "DDPM_HPC_EXPERIMENTS": str(root / "experiments"),
           "DDPM_HPC_CHECKPOINTS": str(root / "checkpoints")}
    subprocess.run([str(REPO / ".venv" / "bin" / "ddpm-hpc"), "train", member], env=env, check=True,
                   capture_output=True, timeout=300)
    latest = json.loads((root / "checkpoints" / member / "latest.json").read_text())
    return load_file(root / "checkpoints" / member / latest["file"])


@pytest.mark.slurm
def test_sweep_array_throttled_interrupted_member_resumes_and_every_member_samples(slurm_cluster, sweep_lab):
    lab = sweep_lab
    proc = lab.make("sweep", SWEEP="trio", step_delay=0.15)
    assert "submitted sweep trio: 3 members" in proc.stdout, proc.stdout
    train_ids = [lab.jobs(m)[0]["job_id"] for m in MEMBERS]
    sample_ids = [lab.jobs(m)[1]["job_id"] for m in MEMBERS]
    array = train_ids[0].split("_")[0]
    assert train_ids == [f"{array}_{i}" for i in range(3)]
    sample_array = sample_ids[0].split("_")[0]
    assert all(lab.jobs(m)[1]["after"] == f"aftercorr:{array}" for m in MEMBERS)
    show = subprocess.run(["scontrol", "show", "job", array], capture_output=True, text=True, timeout=30).stdout
    assert "ArrayTaskThrottle=2" in show, show

    most, interrupted, status_seen = 0, False, ""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        tasks = squeue_tasks(array)
        running = [t for t, state in tasks.items() if state == "RUNNING"]
        most = max(most, len(running))
        assert len(running) <= 2, tasks  # array_parallelism: never more than 2 at once
        if not interrupted and f"{array}_1" in running and lab.step(INTERRUPTED) >= 30:
            subprocess.run(["scancel", "--signal=USR2", f"{array}_1"], check=True, timeout=30)
            interrupted = True
        if running and not status_seen:
            status_seen = lab.make("status", SWEEP="trio").stdout
        if not tasks and not squeue_tasks(sample_array):
            break
        time.sleep(0.3)
    assert interrupted and most >= 1, (interrupted, most)
    lines = status_seen.splitlines()
    assert [ln.split()[0] for ln in lines[:3]] == MEMBERS, status_seen
    assert lines[3].startswith("sweep trio: 3 members: ") and "training" in lines[3], status_seen

    for member, train_id, sample_id in zip(MEMBERS, train_ids, sample_ids):
        assert wait_final(slurm_cluster, train_id) == "COMPLETED", lab.log(member, train_id)
        assert wait_final(slurm_cluster, sample_id) == "COMPLETED", lab.log(member, sample_id)
        grids = list((lab.exps / member / "samples").glob(f"step{STEPS:07d}-ddim10-*.png"))
        assert len(grids) == 1, (member, grids)
        assert [e["event"] for e in lab.events(member, "sample")] == ["start", "finished"]
    # the interrupted member requeued itself (its own array task only) and resumed exactly where it saved
    (stopped_at,) = assert_resumed_where_it_stopped(lab, INTERRUPTED, train_ids[1])
    assert 30 <= stopped_at < STEPS
    assert [e["event"] for e in lab.events(MEMBERS[0])] == ["start", "finished"]
    assert_same_weights(lab, INTERRUPTED, local_reference(lab, INTERRUPTED))
    status = lab.make("status", SWEEP="trio").stdout
    assert "sweep trio: 3 members: 3 done" in status and "restarts 1" in status, status
    assert lab.make("status", INTERRUPTED).stdout.startswith(f"{INTERRUPTED}  train {train_ids[1]} COMPLETED")
    assert "Job completed successfully" in lab.make("logs", MEMBERS[2]).stdout  # the member's own log link
    again = lab.make("sweep", SWEEP="trio").stdout  # everything trained: nothing to submit
    assert "all 3 members are trained; nothing submitted" in again, again
    assert (lab.exps / "trio" / "index.html").is_file()


@pytest.mark.slurm
def test_status_and_cancel_of_a_live_sweep(slurm_cluster, sweep_lab):
    lab = sweep_lab
    lab.make("sweep", SWEEP="duo", step_delay=0.5)
    members = ["duo-lr1e-3", "duo-lr2e-3"]
    ids = [j["job_id"] for m in members for j in lab.jobs(m)]
    slurm_cluster.wait_for(lambda: lab.step(members[0]) >= 10, 240, "duo's first member to reach step 10")
    status = lab.make("status", SWEEP="duo").stdout
    assert [ln.split()[0] for ln in status.splitlines()[:2]] == members, status
    assert "sweep duo: 2 members: " in status and " training" in status, status
    again = lab.make("sweep", SWEEP="duo", check=False)  # two jobs must never write the same checkpoints
    assert again.returncode != 0 and "sweep duo has live jobs" in again.stderr, again.stderr
    assert [j["job_id"] for m in members for j in lab.jobs(m)] == ids  # nothing new submitted
    proc = lab.make("cancel", SWEEP="duo")
    assert "cancelled 4 job(s) of 2 member(s) of sweep duo" in proc.stdout, proc.stdout
    for job_id in ids:
        assert wait_task_final(slurm_cluster, job_id) == "CANCELLED"
    slurm_cluster.wait_for(lambda: "no live jobs" in lab.make("cancel", SWEEP="duo").stdout, 30,
                           "squeue to forget the cancelled sweep")
    status = lab.make("status", SWEEP="duo").stdout
    assert "sweep duo: 2 members: 2 cancelled" in status, status
    assert status.count("CANCELLED (make cancel at ") == 4, status
    # the running member saved a checkpoint on SIGTERM: make sweep continues from it
    slurm_cluster.wait_for(lambda: [e["event"] for e in lab.events(members[0])][-1:] == ["stopped"], 30,
                           "the trainer to save on SIGTERM")


@pytest.mark.slurm
def test_bad_sweeps_submit_nothing_and_create_nothing(slurm_cluster, sweep_lab):
    lab = sweep_lab
    before = sorted(p.name for p in lab.exps.iterdir())
    seeds = ",".join(str(s) for s in range(1002))  # MaxArraySize of the local cluster: Slurm's default 1001
    for extra, message in [({"GRID": f"train.seed={seeds}"}, "this cluster's MaxArraySize is 1001"),
                           ({"GRID": "train.lrr=1e-3,2e-3"}, "unknown key 'train.lrr'; did you mean 'train.lr'?"),
                           ({"GRID": "train.lr=1e-3,-1"}, "member tiny-sweep-lr-1: train.lr: -1"),
                           ({"GRID": ""}, "an empty grid")]:
        proc = lab.make("sweep", "tiny", check=False, **extra)
        errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("make")]
        assert proc.returncode != 0 and len(errors) == 1 and message in errors[0], (extra, proc.stderr)
        assert "Error 2" in proc.stderr  # ddpm-hpc's exit code, as make reports it
    assert sorted(p.name for p in lab.exps.iterdir()) == before
