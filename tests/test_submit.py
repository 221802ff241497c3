"""``make submit`` / ``make sample`` / ``make status`` on the login node, without a cluster: fake ``sbatch``, ``srun``
and ``squeue`` scripts on PATH stand in for SLURM (submitit runs for real against them)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from ddpm_hpc.checkpoint import save_checkpoint
from jobs.cli import main as cli_main
from ddpm_hpc.config import load_experiment
from helpers import SLURM_TEXT, checkpoints_without_pointer, fake, fake_slurm_roots

pytest.importorskip("submitit")

REFUSED = "sbatch: error: Batch job submission failed: Invalid partition name specified"


@pytest.fixture
def roots(tmp_path, monkeypatch) -> Path:
    return fake_slurm_roots(tmp_path, monkeypatch)


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def test_step_files_count_without_latest_json(roots, capsys):
    """latest.json lost, valid step files there: make sample submits, make status and the job see step 20."""
    from jobs.status import training_progress
    from jobs.tasks import _latest_step

    checkpoints_without_pointer(roots, load_experiment("tiny").to_json())
    assert cli_main(["submit-sample", "tiny"]) == 0
    assert "submitted sampling job 4242 for tiny" in capsys.readouterr().out
    assert "ckpt 20 (" in training_progress("tiny", 30, running=False)
    assert _latest_step("tiny") == 20


def test_mismatching_checkpoint_refused_without_latest_json(roots, capsys):
    checkpoints_without_pointer(roots, load_experiment("tiny", ["diffusion.T=60"]).to_json())
    assert cli_main(["submit", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "step-000000020.safetensors was trained with diffusion.T=60" in err and "Traceback" not in err
    # a stored config that cannot be read is left to the job's loader (it skips the file), not a traceback here
    checkpoints_without_pointer(roots, "{not json")
    assert cli_main(["submit", "tiny"]) == 0


@pytest.mark.parametrize("broken, message", [
    ("sbatch", f"error: sbatch refused the training job: {REFUSED}"),
    ("srun", "error: srun not found: this is not a SLURM login node (use make local EXP=tiny here)"),
])
def test_refused_submission_leaves_nothing_behind(roots, capsys, monkeypatch, broken, message):
    if broken == "sbatch":
        fake(roots, "sbatch", f'echo "{REFUSED}" >&2; exit 1')
    else:
        (roots / "bin" / "srun").unlink()
        monkeypatch.setenv("PATH", str(roots / "bin"))  # no real srun either
    assert cli_main(["submit", "tiny"]) == 2
    assert capsys.readouterr().err == message + "\n"
    assert files(roots / "experiments") == {"tiny.yaml", "_cluster.yaml"}  # no snapshot, pickles or empty folders


def _printed_scripts(out: str) -> list[str]:
    """The scripts a dry run printed: the text after each ``# ---- title`` line, up to the next one."""
    parts = re.split(r"^# ---- .*\n", out, flags=re.M)[1:]
    return [part if part.endswith("\n") else part + "\n" for part in parts]


def test_dry_run_prints_exactly_the_scripts_a_submission_writes_and_writes_nothing(roots, capsys, monkeypatch):
    """``submit --dry-run`` submits nothing and creates nothing (no experiment folder, no submitit folder), with or
    without SLURM; its scripts are byte for byte the ones the real submission hands to sbatch (the sampling job's
    dependency names the training job's id once it has one)."""
    before, path = files(roots), os.environ["PATH"]
    monkeypatch.setenv("PATH", str(roots / "empty"))  # no SLURM commands at all, not even the fakes
    assert cli_main(["submit", "tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "nothing is submitted" in out and "skipped" in out
    monkeypatch.setenv("PATH", path)
    assert cli_main(["submit", "tiny", "--dry-run"]) == 0  # with (fake) SLURM: the live-job check runs, still no job
    assert capsys.readouterr().out.split("\n", 1)[1] == out.split("\n", 2)[2]  # same scripts; no "skipped" line
    assert files(roots) == before
    assert not (roots / "bin" / "sbatch.n").exists()  # sbatch never ran
    train, sample = _printed_scripts(out)
    assert "#SBATCH --signal=USR2@30\n" in train and "#SBATCH --dependency=afterok:TRAINING_JOB_ID\n" in sample
    assert cli_main(["submit", "tiny"]) == 0
    logs = roots / "experiments" / "tiny" / "logs"
    assert (logs / "4242_submission.sh").read_text() == train
    assert (logs / "4243_submission.sh").read_text() == sample.replace("TRAINING_JOB_ID", "4242")
    assert cli_main(["submit-sample", "tiny", "sample.steps=3", "--dry-run"]) == 0
    (script,) = _printed_scripts(capsys.readouterr().out)
    assert "#SBATCH --job-name=ddpm-tiny-sample\n" in script and "--dependency" not in script  # squeue: no live jobs


def test_refused_submission_keeps_the_last_submission(roots, capsys):
    """A refused resubmission leaves the previous snapshot, registry and submitit files as they were."""
    assert cli_main(["submit", "tiny"]) == 0
    folder = roots / "experiments" / "tiny"
    before = {name: (folder / name).read_bytes() for name in files(folder) if (folder / name).is_file()}
    assert {"submitted_config.yaml", "jobs.json", "logs/4242_submitted.pkl"} <= before.keys()
    fake(roots, "sbatch", f'echo "{REFUSED}" >&2; exit 1')
    assert cli_main(["submit", "tiny", "train.steps=40"]) == 2
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert files(folder) == set(before) | {"logs"}
    assert len(json.loads((folder / "jobs.json").read_text())["jobs"]) == 2


def test_refused_sampling_job_names_the_submitted_training_job(roots, capsys):
    sampling_refused = f'if grep -q afterok "$1"; then echo "{REFUSED}" >&2; exit 1; fi'
    fake(roots, "sbatch", f'{sampling_refused}; echo "Submitted batch job 7"')
    assert cli_main(["submit", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training job 7 of tiny is submitted, but sbatch refused the sampling job") and \
        "make sample EXP=tiny" in err and err.count("\n") == 1
    folder = roots / "experiments" / "tiny"
    assert [j["kind"] for j in json.loads((folder / "jobs.json").read_text())["jobs"]] == ["train"]
    assert (folder / "submitted_config.yaml").is_file() and (folder / "logs" / "7_submitted.pkl").is_file()
    assert not [p for p in (folder / "logs").iterdir() if p.suffix == ".pkl" and p.name != "7_submitted.pkl"]


def test_missing_data_warning_uses_the_loaders_test(roots, capsys):
    """An empty MNIST/raw (left by an old failed download) still warns."""
    from jobs.submit import warn_missing_data

    (roots / "data" / "MNIST" / "raw").mkdir(parents=True)
    warn_missing_data(load_experiment("tiny", ["data.dataset=mnist"]))
    err = capsys.readouterr().err
    assert err.startswith(f"warning: no mnist dataset in {roots / 'data' / 'MNIST' / 'raw'} here") and \
        "make data" in err
    warn_missing_data(load_experiment("tiny"))  # digits ships with scikit-learn
    assert capsys.readouterr().err == ""


def test_scancel_failure_is_one_line(roots, capsys):
    assert cli_main(["submit", "tiny"]) == 0
    fake(roots, "squeue", 'echo "4242|RUNNING|None"; echo "4243|PENDING|Dependency"')
    fake(roots, "scancel", 'echo "scancel: error: Kill job error on job id 4242: Access/permission denied" >&2; exit 1')
    capsys.readouterr()
    for command in (["cancel", "tiny"], ["submit", "tiny", "--force"]):
        assert cli_main(command) == 2
        assert capsys.readouterr().err == ("error: could not cancel 4242, 4243 of tiny: scancel 4242 failed: scancel: "
                                           "error: Kill job error on job id 4242: Access/permission denied\n")


# -- make status / make cancel / make logs against fake squeue and sacct ------------------------------------------

NO_SLURM = 'echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1'
RAN = "2025-01-01T10:00:00"  # a run's Start in sacct; "None" when it never started


def acct(*rows: str) -> str:
    """A fake sacct printing ``JobID|State|ExitCode|Reason|Start|End`` rows."""
    return "; ".join(f'echo "{row}"' for row in rows)


def job_event(job_id: str, event: str, step: int = 0, restart: int = 0) -> None:
    from jobs import registry

    registry.record_event("tiny", job_id=job_id, kind="train", event=event, step=step, restart=restart)


def metrics(*lines: tuple[int, float]) -> None:
    with open(Path(os.environ["DDPM_HPC_EXPERIMENTS"]) / "tiny" / "metrics.jsonl", "a") as f:
        for step, wall in lines:
            f.write(json.dumps({"step": step, "loss": 0.5, "loss_smooth": 0.5, "wall_seconds": wall}) + "\n")


def run(capsys, *command: str) -> str:
    capsys.readouterr()
    assert cli_main(list(command)) == 0
    return capsys.readouterr().out


def submitted_then_cancelled(roots, capsys, live: str = 'echo "4242|RUNNING|None"; echo "4243|PENDING|Dependency"'):
    """Training 4242 ran (steps 0-20) and sampling 4243 waited for it, until make cancel; squeue forgot them."""
    run(capsys, "submit", "tiny")
    job_event("4242", "start")
    metrics((10, 1.0), (20, 2.0))
    fake(roots, "squeue", live)
    fake(roots, "scancel", "exit 0")
    out = run(capsys, "cancel", "tiny")
    job_event("4242", "stopped", step=20)
    fake(roots, "squeue", "exit 0")
    return out


def test_cancelled_jobs_show_make_cancel_not_the_dependency(roots, capsys):
    """sacct keeps Reason=Dependency for a job that waited (afterany) and then ran: make cancel is the cause."""
    submitted_then_cancelled(roots, capsys)
    fake(roots, "sacct", acct(f"4242|CANCELLED by 0|0:15|Dependency|{RAN}|{RAN}",
                              f"4243|CANCELLED by 0|0:0|Dependency|None|{RAN}"))
    line = run(capsys, "status", "tiny")
    assert "train 4242 CANCELLED (make cancel at " in line and "sample 4243 CANCELLED (make cancel at " in line, line
    assert "not run" not in line
    logs = run(capsys, "logs", "tiny", "--job", "4243")
    assert logs.startswith("sample job 4243 of tiny never started: it ended CANCELLED (make cancel at "), logs


def test_sampling_job_cancelled_by_slurm_was_not_run(roots, capsys):
    run(capsys, "submit", "tiny")
    fake(roots, "sacct", acct(f"4242|FAILED|1:0|None|{RAN}|{RAN}", f"4243|CANCELLED|0:0|Dependency|None|{RAN}"))
    assert "sample 4243 CANCELLED (not run: the job it depends on did not succeed)" in run(capsys, "status", "tiny")


def test_without_slurm_the_state_comes_from_jobs_json_and_events(roots, capsys):
    submitted_then_cancelled(roots, capsys)
    fake(roots, "squeue", NO_SLURM)
    fake(roots, "sacct", NO_SLURM)
    out = run(capsys, "status", "tiny")
    assert "train 4242 CANCELLED (make cancel at " in out and "(note: squeue: squeue -h failed: " in out, out
    entries = json.loads((roots / "experiments" / "tiny" / "jobs.json").read_text())
    for entry in entries["jobs"]:
        entry["cancelled_at"] = None  # e.g. stopped by a requeue or a pre-emption, not by us
    (roots / "experiments" / "tiny" / "jobs.json").write_text(json.dumps(entries))
    assert "train 4242 STOPPED  |  step 20/30" in run(capsys, "status", "tiny")


def test_cancel_mentions_the_checkpoint_only_for_a_training_job(roots, capsys):
    assert "(a running training job saves a checkpoint first" in submitted_then_cancelled(roots, capsys)
    fake(roots, "squeue", 'echo "4243|PENDING|Dependency"')  # e.g. a make sample job alone
    assert run(capsys, "cancel", "tiny") == "cancelled sample 4243 of tiny\n"


@pytest.mark.parametrize("sacct", [acct(f"4242|REQUEUED|0:0|None|{RAN}|{RAN}", "4242|PENDING|0:0|BeginTime|None|None"),
                                   "exit 0"])  # sacct lags slurmctld by a second or two
def test_requeued_job_waiting_to_restart(roots, capsys, sacct):
    run(capsys, "submit", "tiny")
    job_event("4242", "start")
    job_event("4242", "requeued", step=20)
    fake(roots, "squeue", 'echo "4242|PENDING|BeginTime"; echo "4243|PENDING|Dependency"')
    fake(roots, "sacct", sacct)
    assert "train 4242 PENDING (requeued, restarts shortly)  restarts 1  |" in run(capsys, "status", "tiny")


def test_progress_counts_the_checkpoint_and_only_the_current_runs_speed(roots, capsys):
    """The step is the newer of metrics.jsonl and the checkpoint; the ETA comes from the running job's own lines."""
    run(capsys, "submit", "tiny")
    metrics((5, 1.0), (10, 2.0))
    save_checkpoint(roots / "checkpoints" / "tiny", 12, {"w": torch.zeros(2)}, {"step": "12"})
    fake(roots, "squeue", 'echo "4242|RUNNING|None"; echo "4243|PENDING|Dependency"')
    fake(roots, "sacct", "exit 0")
    assert "step 12/30  loss 0.5000  ckpt 12 (" in run(capsys, "status", "tiny")  # killed after its checkpoint
    job_event("4242", "start", step=12, restart=1)  # restarted: the lines so far are the previous run's
    assert run(capsys, "status", "tiny").split("|")[1].endswith("eta ?  ")
    metrics((15, 2.5), (20, 3.5))  # 5 steps/s now
    assert run(capsys, "status", "tiny").split("|")[1].endswith("eta 0:02  ")


# -- requests the partition can never run, and jobs that will never start ---------------------------------------------

@pytest.mark.parametrize("overrides, words", [
    (["slurm.time_min=120"], ["slurm.time_min=120 is above partition debug's MaxTime of 60 min", "PartitionTimeLimit",
                              "slurm.time_min=60 or less"]),
    (["slurm.sample_time_min=61"], ["slurm.sample_time_min=61 is above partition debug's MaxTime of 60 min"]),
    (["slurm.nodes=2"], ["slurm.nodes=2 is above partition debug's TotalNodes of 1"]),
    (["slurm.gres=gpu:ampere:1"], ["slurm.gres=gpu:ampere:1: the nodes of partition debug offer gpu:1"]),
    (["slurm.gres=gpu:1", "slurm.gpus_per_node=2"], ["asks for 2 per node", "at most 1"]),
])
def test_request_beyond_the_partition_is_refused_before_anything_is_submitted(roots, capsys, overrides, words):
    assert cli_main(["submit", "tiny", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: experiment tiny: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    assert not (roots / "bin" / "sbatch.n").exists()  # sbatch never ran
    assert files(roots / "experiments") == {"tiny.yaml", "_cluster.yaml"}


def test_make_sample_is_checked_against_the_partition_and_the_checkpoint(roots, capsys):
    assert cli_main(["submit-sample", "tiny", "slurm.sample_time_min=90"]) == 2
    assert "slurm.sample_time_min=90 is above partition debug's MaxTime" in capsys.readouterr().err
    # a conditional model trained without label dropout, while the YAML now says 0.1: the checkpoint decides
    cond = ["model.arch=unet", "model.channels=[8,16]", "model.conditioning=embedding"]
    save_checkpoint(roots / "checkpoints" / "tiny", 30, {"w": torch.zeros(2)},
                    {"step": "30", "config": load_experiment("tiny", cond).to_json()})
    assert cli_main(["submit-sample", "tiny", *cond, "train.label_dropout=0.1", "sample.guidance=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.label_dropout=0)" in err and "sample.guidance=3 needs a model trained " \
        "with train.label_dropout > 0" in err, err
    assert not (roots / "bin" / "sbatch.n").exists()


def test_status_says_a_job_pending_on_the_partition_time_limit_will_not_start(roots, capsys):
    run(capsys, "submit", "tiny")
    record = (SLURM_TEXT / "scontrol_show_job_partition_time_limit.txt").read_text().replace("JobId=10 ", "JobId=4242 ")
    (roots / "job.txt").write_text(record)
    partitions = SLURM_TEXT / "scontrol_show_partition_oneline.txt"
    fake(roots, "scontrol", f'[ "$2" = job ] && cat {roots / "job.txt"} && exit 0; '
                            f'[ "$2" = partition ] && grep "^PartitionName=$4 " {partitions}')
    fake(roots, "squeue", 'echo "4242|PENDING|PartitionTimeLimit"; echo "4243|PENDING|Dependency"')
    fake(roots, "sacct", "exit 0")
    out = run(capsys, "status", "tiny")
    assert "train 4242 PENDING (will not start: PartitionTimeLimit: its time limit (120 min) is above partition " \
           "debug's MaxTime (60 min); make cancel EXP=tiny, then make submit EXP=tiny SET=\"slurm.time_min=60\"" \
           in out, out
    assert "sample 4243 PENDING (Dependency)" in out, out


def test_restart_true_gives_each_submission_its_own_token(roots, capsys):
    """The token the job's every run passes to the trainer (train.restart=true: start over once per submission)."""
    import pickle

    def token(job_id: str):
        pkl = roots / "experiments" / "tiny" / "logs" / f"{job_id}_submitted.pkl"
        return pickle.loads(pkl.read_bytes()).function.restart_token  # submitit's own file, written by this test

    assert cli_main(["submit", "tiny", "train.restart=true"]) == 0
    assert cli_main(["submit", "tiny", "train.restart=true"]) == 0  # fake squeue: no live jobs
    assert cli_main(["submit", "tiny"]) == 0
    first, second, plain = token("4242"), token("4244"), token("4246")
    assert first and second and first != second and plain is None
