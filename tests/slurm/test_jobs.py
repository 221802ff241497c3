"""The SLURM jobs of ``jobs/`` end to end on the real local cluster (tests/slurm/cluster.sh), through ``make``.

Every test submits a tiny experiment (embedded digits, the two-layer conv net, 100 steps) with ``make submit`` into a
temporary experiments/checkpoints root, interrupts it the way the cluster would, and checks the outcome on disk (the
job's events.jsonl, its log, the checkpoints) and in sacct. The interrupted runs must end with weights that are
``torch.equal`` to the uninterrupted reference run's. ``DDPM_HPC_STEP_DELAY`` slows the tiny runs down so that a
test can interrupt them mid-run.

The first tests (no ``slurm`` marker) check the sbatch parameters and the requeue logic without SLURM.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_lab import (JOB_TIMEOUT, LOCAL_CLUSTER, REPO, STEPS, TINY, Lab, _experiment,
                       assert_resumed_where_it_stopped, assert_same_weights, make_lab, wait_final, wait_step)


# ---------------------------------------------------------------------------------------------------------------------
# Without SLURM: sbatch parameters and the requeue decision


def test_sbatch_script_for_ncc_defaults(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from jobs.executor import sbatch_script

    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    (tmp_path / "_cluster.yaml").write_text((REPO / "experiments" / "_cluster.yaml").read_text())
    exp = _experiment("ncc", tmp_path=tmp_path)
    train = sbatch_script(exp, "train", tmp_path / "logs")
    for line in ("--partition=ug-gpu-small", "--qos=short", "--gres=gpu:1", "--signal=USR2@120", "--requeue",
                 "--time=120", "--mem=16G", "--cpus-per-task=4", "--open-mode=append"):
        assert f"#SBATCH {line}\n" in train, line
    assert "--gpus-per-node" not in train  # NCC style: --gres only, never both
    assert "source /etc/profile" in train and "srun" in train
    assert "--dependency" not in train
    sample = sbatch_script(exp, "sample", tmp_path / "logs", "afterok:123")
    assert "#SBATCH --dependency=afterok:123\n" in sample and "#SBATCH --kill-on-invalid-dep=yes\n" in sample
    assert "#SBATCH --time=30\n" in sample


def test_sbatch_script_for_several_gpus_and_nodes(tmp_path, monkeypatch):
    """gpus_per_node: 4 over the NCC default gres gpu:1 -> --gres=gpu:4, one task per GPU; sampling stays 1 GPU."""
    pytest.importorskip("submitit")
    from jobs.executor import sbatch_script, world_size

    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    (tmp_path / "_cluster.yaml").write_text((REPO / "experiments" / "_cluster.yaml").read_text())
    exp = _experiment("ncc", ["slurm.gpus_per_node=4", "slurm.nodes=2", "slurm.gres=gpu:ampere:1"], tmp_path=tmp_path)
    assert world_size(exp) == 8
    train = sbatch_script(exp, "train", tmp_path / "logs")
    for line in ("--gres=gpu:ampere:4", "--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=4"):
        assert f"#SBATCH {line}\n" in train, line
    assert "--kill-on-bad-exit=1" in train and "--gpus-per-node" not in train
    sample = sbatch_script(exp, "sample", tmp_path / "logs", "afterok:1")
    for line in ("--gres=gpu:ampere:1", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in sample, line
    assert "--kill-on-bad-exit" not in sample
    # the default stays one task on one GPU
    one = sbatch_script(_experiment("ncc", tmp_path=tmp_path), "train", tmp_path / "logs")
    assert "#SBATCH --ntasks-per-node=1\n" in one and "#SBATCH --gres=gpu:1\n" in one
    assert "--kill-on-bad-exit" not in one
    # CPU-only data parallelism (the SLURM tests): tasks_per_node ranks, no GPU requested
    cpu = _experiment("cpu", ["slurm.tasks_per_node=2"], LOCAL_CLUSTER, tmp_path)
    script = sbatch_script(cpu, "train", tmp_path / "logs")
    assert "#SBATCH --ntasks-per-node=2\n" in script and "gpu" not in script and world_size(cpu) == 2


# Run in a fresh Python with SUBMITIT_PREEMPT_SIGNAL=USR1 (submitit reads it once, at import): the sbatch script the
# executor renders, then, in a shell that runs that script's setup lines (as sbatch would before srun), the handler
# submitit's job entry point installs (JobEnvironment._handle_signals, what submitit.core._submit calls).
_RENDER = """
import sys
from jobs.executor import sbatch_script
from ddpm_hpc.config import load_experiment
sys.stdout.write(sbatch_script(load_experiment("pin"), "train", __import__("pathlib").Path(sys.argv[1])))
"""
_HANDLER = """
import signal, submitit
from submitit.core.utils import DelayedSubmission, JobPaths
from submitit.slurm.slurm import SlurmJobEnvironment
SlurmJobEnvironment()._handle_signals(JobPaths("logs", job_id="1"), DelayedSubmission(print))
def owner(sig):
    handler = signal.getsignal(sig)
    return "default" if handler == signal.SIG_DFL else getattr(handler, "__name__", repr(handler))
print(owner(signal.SIGUSR2), owner(signal.SIGUSR1))
"""


def test_preemption_signal_is_usr2_whatever_submitit_preempt_signal_says(tmp_path):
    """A user (or another tool's setup) exported SUBMITIT_PREEMPT_SIGNAL=USR1 on the login node: the script still asks
    Slurm for USR2 (what the trainer catches) and the job's submitit handler is installed for USR2, not USR1."""
    pytest.importorskip("submitit")
    (tmp_path / "pin.yaml").write_text(TINY)
    (tmp_path / "_cluster.yaml").write_text(LOCAL_CLUSTER.replace("setup: []", "setup: [echo ready]"))
    env = {**os.environ, "SUBMITIT_PREEMPT_SIGNAL": "USR1", "DDPM_HPC_EXPERIMENTS": str(tmp_path),
           "PYTHONPATH": str(REPO)}
    env.pop("DDPM_HPC_CLUSTER_CONFIG", None)
    script = subprocess.run([sys.executable, "-c", _RENDER, str(tmp_path / "logs")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert "#SBATCH --signal=USR2@30\n" in script and "USR1" not in script
    setup = script.split("# setup\n", 1)[1].split("\n\n# command", 1)[0]
    assert setup.splitlines() == ["echo ready", "export SUBMITIT_PREEMPT_SIGNAL=USR2"]  # the pin comes last
    shell = f"{setup}\nexec {shlex.quote(sys.executable)} -c {shlex.quote(_HANDLER)}"
    out = subprocess.run(["bash", "-c", shell], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ready", "checkpoint_and_try_requeue", "default"], out.stdout + out.stderr


@pytest.mark.parametrize("overrides, message", [
    (["slurm.signal_delay_s=700", "slurm.time_min=20"], "more than half of slurm.time_min"),
    (["slurm.signal_delay_s=5"], "at least 10 s"),
    (["slurm.gres=gpu:ampere:2", "slurm.gpus_per_node=4"], "asks for 2 GPUs per node"),
    (["slurm.gpus_per_node=2", "slurm.tasks_per_node=3"], "one task per GPU"),
    (["slurm.nodes=3"], "divide evenly over 3 ranks"),
    (["slurm.additional={signal: USR1@60}"], "set by make submit itself"),
])
def test_slurm_config_refusals(tmp_path, monkeypatch, overrides, message):
    from ddpm_hpc.errors import ConfigError
    from jobs.executor import check_slurm_config

    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    exp = _experiment("x", overrides, LOCAL_CLUSTER, tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_slurm_config(exp)


class _FakeEnv:
    def __init__(self, folder: Path):
        self.job_id = "77"
        self.paths = type("P", (), {"submitted_pickle": folder / "77_submitted.pkl"})()


@pytest.mark.parametrize("restarts", [0, 3, -1])
def test_train_job_requeues_itself_with_a_fresh_job(tmp_path, monkeypatch, restarts):
    """After USR2 the job dumps a stateless submission and runs scontrol requeue, until slurm.max_requeues."""
    pytest.importorskip("submitit")
    from ddpm_hpc.trainer import TrainOutcome
    from jobs import tasks

    exps = tmp_path / "exps"
    exps.mkdir()
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(exps))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", str(max(restarts, 0)))
    monkeypatch.setattr(tasks.submitit, "JobEnvironment", lambda: _FakeEnv(tmp_path))
    requeued = []
    monkeypatch.setattr(tasks, "requeue", requeued.append)
    monkeypatch.setattr("ddpm_hpc.pipeline.run_training",
                        lambda exp, ctx=None, after_step=None, **_: TrainOutcome("interrupted", 42, "SIGUSR2",
                                                                            tmp_path / "c"))
    exp = _experiment("x", None, LOCAL_CLUSTER, exps)
    job = tasks.TrainJob(exp.to_json(), tasks.current_roots(), max_requeues=3)
    if restarts < 0:  # scontrol missing or refusing: the job fails with that reason instead of hanging on
        def refuse(job_id):
            raise tasks.SlurmUnavailable("scontrol not found")
        monkeypatch.setattr(tasks, "requeue", refuse)
        with pytest.raises(RuntimeError, match="could not requeue"):
            job()
        events = [json.loads(ln) for ln in (exps / "x/logs/events.jsonl").read_text().splitlines()]
        assert events[-1]["event"] == "failed" and "scontrol not found" in events[-1]["message"]
        return
    if restarts >= 3:
        with pytest.raises(tasks.RequeueLimit, match="max_requeues=3"):
            job()
        assert requeued == [] and not (tmp_path / "77_submitted.pkl").exists()
        events = [json.loads(ln) for ln in (tmp_path / "exps/x/logs/events.jsonl").read_text().splitlines()]
        assert events[-1]["event"] == "failed" and "restarted 3 times" in events[-1]["message"]
        return
    with pytest.raises(SystemExit):
        job()
    assert requeued == ["77"]
    data = (tmp_path / "77_submitted.pkl").read_bytes()
    assert len(data) < 20_000  # a config and a few paths: no tensors
    delayed = pickle.loads(data)
    fresh = delayed.function
    assert isinstance(fresh, tasks.TrainJob) and fresh is not job
    assert vars(fresh) == vars(job) and delayed._timeout_countdown == 2


def test_a_finished_training_job_ignores_a_late_time_limit_warning(tmp_path, monkeypatch):
    """Seen on the real cluster: a run that finished just before its time limit got the USR2 warning while Python
    shut down (its handlers gone), so the task died of USR2 and the finished job ended FAILED. After a finished run
    the job ignores USR2 (the training itself is stubbed: only the job's handling of its outcome is under test)."""
    import signal

    from ddpm_hpc.trainer import TrainOutcome
    from jobs import tasks

    exps = tmp_path / "exps"
    exps.mkdir()
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(exps))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    monkeypatch.setattr(tasks.submitit, "JobEnvironment", lambda: _FakeEnv(tmp_path))
    monkeypatch.setattr("ddpm_hpc.pipeline.run_training",
                        lambda exp, ctx=None, after_step=None, **_: TrainOutcome("finished", 10, None, tmp_path / "c"))
    exp = _experiment("x", None, LOCAL_CLUSTER, exps)
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        result = tasks.TrainJob(exp.to_json(), tasks.current_roots(), max_requeues=3)()
        assert result["step"] == 10
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, previous)


# ---------------------------------------------------------------------------------------------------------------------
# The real cluster


def assert_sampled_once(cluster, lab: Lab, name: str, sample_id: str) -> None:
    assert wait_final(cluster, sample_id) == "COMPLETED", lab.log(name, sample_id)
    grids = list((lab.exps / name / "samples").glob(f"step{STEPS:07d}-ddim10-*.png"))
    assert len(grids) == 1, grids
    assert [e["event"] for e in lab.events(name, "sample")] == ["start", "finished"]
    cluster.wait_for(lambda: cluster.sacct_states(sample_id) == ["COMPLETED"], 15, f"sacct of {sample_id}")


@pytest.fixture(scope="module")
def lab(slurm_cluster, tmp_path_factory) -> Lab:
    return make_lab(tmp_path_factory, "slurm-lab")


@pytest.fixture(scope="module")
def reference(slurm_cluster, lab) -> dict:
    """(1) An uninterrupted run and its chained sampling job; its final tensors are the reference."""
    train_id, sample_id = lab.submit("reference")
    assert wait_final(slurm_cluster, train_id) == "COMPLETED", lab.log("reference", train_id)
    assert_sampled_once(slurm_cluster, lab, "reference", sample_id)
    return {"tensors": lab.final_tensors("reference"), "train": train_id, "sample": sample_id}


@pytest.mark.slurm
def test_run_to_the_end_then_sampling_job_writes_the_grid(slurm_cluster, lab, reference):
    assert slurm_cluster.sacct_states(reference["train"]) == ["COMPLETED"]
    events = lab.events("reference")
    assert [e["event"] for e in events] == ["start", "finished"]
    status = lab.make("status", "reference").stdout
    assert f"train {reference['train']} COMPLETED" in status and f"step {STEPS}/{STEPS}" in status, status
    assert f"sample {reference['sample']} COMPLETED" in status, status
    assert (lab.exps / "reference" / "submitted_config.yaml").is_file()
    logs = lab.make("logs", "reference").stdout
    assert f"{reference['sample']}_0_log.out" in logs and "Job completed successfully" in logs


@pytest.mark.slurm
def test_partition_preemption_by_a_gpu_job(slurm_cluster, lab, reference):
    train_id, sample_id = lab.submit("preempt")
    wait_step(slurm_cluster, lab, "preempt", 30)
    cpus = subprocess.run(["sinfo", "-h", "-n", slurm_cluster.node, "-o", "%c"], capture_output=True, text=True,
                          check=True, timeout=30).stdout.split()[0]
    high = subprocess.run(["sbatch", "--parsable", "-p", "gpu", "--gres=gpu:1", "-c", cpus, "--mem=100M",
                           "-o", "/dev/null", "--wrap", "sleep 2"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip().split(";")[0]
    assert wait_final(slurm_cluster, high) == "COMPLETED"
    assert wait_final(slurm_cluster, train_id) == "COMPLETED", lab.log("preempt", train_id)
    (stopped_at,) = assert_resumed_where_it_stopped(lab, "preempt", train_id)
    assert f"SIGUSR2 received: saved step {stopped_at}" in lab.log("preempt", train_id)
    states = slurm_cluster.sacct_states(train_id)
    assert states[-1] == "COMPLETED" and states[0] in ("REQUEUED", "PREEMPTED"), states
    assert_sampled_once(slurm_cluster, lab, "preempt", sample_id)
    assert_same_weights(lab, "preempt", reference["tensors"])


@pytest.mark.slurm
def test_usr2_checkpoints_requeues_and_resumes_at_the_same_step(slurm_cluster, lab, reference, timelimit):
    train_id, sample_id = lab.submit("usr2")
    # a second submit while the first is live is refused: two jobs must never write the same checkpoints
    again = lab.make("submit", "usr2", check=False)
    assert again.returncode != 0 and "already has live jobs" in again.stderr, again.stderr
    wait_step(slurm_cluster, lab, "usr2", 30)
    subprocess.run(["scancel", "--signal=USR2", train_id], check=True, timeout=30)
    assert wait_final(slurm_cluster, train_id) == "COMPLETED", lab.log("usr2", train_id)
    (stopped_at,) = assert_resumed_where_it_stopped(lab, "usr2", train_id)
    assert 30 <= stopped_at < STEPS
    assert f"SIGUSR2 received: saved step {stopped_at}" in lab.log("usr2", train_id)
    slurm_cluster.wait_for(lambda: slurm_cluster.sacct_states(train_id) == ["REQUEUED", "COMPLETED"], 15,
                           f"sacct -D of {train_id}")
    assert_sampled_once(slurm_cluster, lab, "usr2", sample_id)
    assert_same_weights(lab, "usr2", reference["tensors"])


@pytest.mark.slurm
def test_scontrol_requeue_resumes_from_the_checkpoint_on_disk(slurm_cluster, lab, reference):
    """No USR2 and no checkpoint(): the re-run loads the original pickle and finds its place from the files."""
    train_id, sample_id = lab.submit("requeue")
    pickle_file = lab.exps / "requeue" / "logs" / f"{train_id}_submitted.pkl"
    original = pickle_file.read_bytes()
    wait_step(slurm_cluster, lab, "requeue", 30)
    periodic = json.loads((lab.ckpts / "requeue" / "latest.json").read_text())["step"]
    subprocess.run(["scontrol", "requeue", train_id], check=True, timeout=30)
    assert wait_final(slurm_cluster, train_id) == "COMPLETED", lab.log("requeue", train_id)
    # SLURM sends SIGTERM before killing the step: the trainer saves at the step boundary if it can, and the job
    # exits without requeueing itself (SLURM does that); otherwise the last periodic checkpoint is used.
    events = lab.events("requeue")
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["restart"] == 1, events
    resumed = starts[1]["step"]
    assert resumed >= periodic >= 20, (resumed, periodic)
    stopped = [e for e in events if e["event"] == "stopped"]
    if stopped:  # saved on SIGTERM: resumed at exactly that step
        assert resumed == stopped[0]["step"] and "SIGTERM received" in lab.log("requeue", train_id), events
    else:  # killed before the step boundary: the last periodic checkpoint
        assert resumed % 20 == 0, events
    assert "resuming requeue from " in lab.log("requeue", train_id)
    assert f"(step {resumed}/{STEPS})" in lab.log("requeue", train_id)
    assert not [e for e in events if e["event"] == "requeued"], events  # the job did not requeue itself
    assert "Calling checkpoint method" not in lab.log("requeue", train_id)
    assert pickle_file.read_bytes() == original  # nothing carried state in the pickle
    slurm_cluster.wait_for(lambda: slurm_cluster.sacct_states(train_id) == ["REQUEUED", "COMPLETED"], 15,
                           f"sacct -D of {train_id}")
    assert_sampled_once(slurm_cluster, lab, "requeue", sample_id)
    assert_same_weights(lab, "requeue", reference["tensors"])


@pytest.mark.slurm
def test_failed_job_shows_reason_and_sampling_never_runs(slurm_cluster, lab):
    lab.write_experiment("broken", TINY.replace("dataset: digits,", "dataset: mnist, root: /nonexistent/ddpm-data,"))
    proc = lab.make("submit", "broken")
    # a warning only: the compute nodes might see other paths
    assert "warning: no mnist dataset in /nonexistent/ddpm-data/MNIST/raw here" in proc.stderr
    train_id, sample_id = (j["job_id"] for j in lab.jobs("broken"))
    assert wait_final(slurm_cluster, train_id) == "FAILED"
    assert wait_final(slurm_cluster, sample_id) == "CANCELLED"
    # sacct (slurmdbd) lags slurmctld: poll until the cancelled sampling job's reason has arrived too
    status = slurm_cluster.wait_for(lambda: (s := lab.make("status", "broken").stdout) and "FAILED" in s
                                    and "CANCELLED (not run" in s and s, 90, "make status to show FAILED and why")
    line = [ln for ln in status.splitlines() if ln.startswith("broken")]
    assert len(line) == 1, status
    assert f"train {train_id} FAILED: DatasetMissing: mnist dataset not found in /nonexistent/ddpm-data" in line[0]
    assert f"sample {sample_id} CANCELLED (not run" in line[0]
    assert not (lab.exps / "broken" / "logs" / f"{sample_id}_0_log.out").exists()
    assert lab.events("broken", "sample") == []
    assert not (lab.exps / "broken" / "samples").exists()


@pytest.mark.slurm
def test_refused_submission_is_one_line_and_leaves_nothing(slurm_cluster, lab):
    lab.write_experiment("refused")
    proc = lab.make("submit", "refused", "slurm.partition=nosuch", check=False)
    errors = [ln for ln in proc.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", ln)]  # make's own
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: sbatch refused the training job: sbatch: error: ") and "nosuch" in errors[0]
    assert not (lab.exps / "refused").exists()  # no snapshot, no submitit pickles, no empty folders


@pytest.mark.slurm
def test_sample_alone_and_cancel(slurm_cluster, lab, reference):
    # make sample: another sampler setting on the finished reference checkpoint
    proc = lab.make("sample", "reference", "sample.steps=5")
    job_id = lab.jobs("reference")[-1]["job_id"]
    assert f"submitted sampling job {job_id}" in proc.stdout and "runs now" in proc.stdout
    assert wait_final(slurm_cluster, job_id) == "COMPLETED", lab.log("reference", job_id)
    assert list((lab.exps / "reference" / "samples").glob(f"step{STEPS:07d}-ddim5-*.png"))
    # make cancel: the running trainer saves on SIGTERM; the chained sampling job goes too
    train_id, sample_id = lab.submit("cancelled")
    wait_step(slurm_cluster, lab, "cancelled", 20)
    proc = lab.make("cancel", "cancelled")
    assert f"train {train_id}" in proc.stdout and f"sample {sample_id}" in proc.stdout
    assert wait_final(slurm_cluster, train_id) == "CANCELLED"
    assert wait_final(slurm_cluster, sample_id) == "CANCELLED"
    slurm_cluster.wait_for(lambda: [e["event"] for e in lab.events("cancelled")][-1:] == ["stopped"], 30,
                           "the trainer to save on SIGTERM")
    saved = lab.events("cancelled")[-1]["step"]
    assert json.loads((lab.ckpts / "cancelled" / "latest.json").read_text())["step"] == saved >= 20
    slurm_cluster.wait_for(lambda: "no live jobs" in lab.make("cancel", "cancelled").stdout, 30,
                           "squeue to forget the cancelled jobs")
    status = lab.make("status", "cancelled").stdout
    assert f"train {train_id} CANCELLED (make cancel at " in status and \
        f"sample {sample_id} CANCELLED (make cancel at " in status, status
    logs = subprocess.run([str(REPO / ".venv" / "bin" / "ddpm-hpc"), "logs", "cancelled", "--job", sample_id],
                          capture_output=True, text=True, env=lab.env, timeout=60).stdout  # make logs has no JOB=
    assert logs.startswith(f"sample job {sample_id} of cancelled never started: it ended CANCELLED (make cancel"), logs


@pytest.fixture(scope="module")
def timelimit(slurm_cluster, lab, reference) -> tuple[str, str]:
    """(5) submitted early (after the pre-emption test, which needs the whole node) and checked last: it spends
    most of its time waiting for Slurm's time-limit signal and the requeue delay, so it runs beside other tests."""
    # 1-minute limit, USR2 15 s before it (Slurm's periodic check sends it 0-30 s earlier still, i.e. 15-45 s into
    # a run); at least 45 s of training at 0.45 s/step, so one run can never finish it.
    return lab.submit("timelimit", "slurm.time_min=1 slurm.signal_delay_s=15", step_delay=0.45)


@pytest.mark.slurm
def test_time_limit_shorter_than_the_run_requeues_until_finished(slurm_cluster, lab, reference, timelimit):
    train_id, sample_id = timelimit
    assert wait_final(slurm_cluster, train_id, 2 * JOB_TIMEOUT) == "COMPLETED", lab.log("timelimit", train_id)
    stops = assert_resumed_where_it_stopped(lab, "timelimit", train_id)
    assert len(stops) >= 1 and stops == sorted(stops)
    assert all("SIGUSR2" in e["message"] for e in lab.events("timelimit") if e["event"] == "requeued")
    slurm_cluster.wait_for(lambda: slurm_cluster.sacct_states(train_id) == ["REQUEUED"] * len(stops) + ["COMPLETED"],
                           15, f"sacct -D of {train_id}")
    assert_sampled_once(slurm_cluster, lab, "timelimit", sample_id)
    assert_same_weights(lab, "timelimit", reference["tensors"])
