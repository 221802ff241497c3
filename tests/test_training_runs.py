"""What a training run says and what it does with an earlier run's files: device checks, starting over (nothing is
deleted, everything of the old run is moved aside), rewinding metrics on resume, nothing-to-do runs, throughput after a
resume, and the log lines on a terminal. Tiny runs in temporary roots, in this process."""

from __future__ import annotations

import json
import os
import signal
import types

import pytest
import torch

from _train_helpers import EXP, TINY, ckpt_dir, metrics_lines, roots, start_cli, write_experiment
from ddpm_hpc import devices, logging_utils, train_loop, trainer
from jobs.cli import main
from ddpm_hpc.config import load_experiment
from ddpm_hpc.distributed import DistContext
from ddpm_hpc.errors import ConfigError, TrainingDiverged, UserError

SHORT = {**TINY, "train": {**TINY["train"], "steps": 4, "log_every": 2, "checkpoint_every": 3}}


def _train(root, *overrides, **kwargs):
    messages: list[str] = []
    with roots(root):
        outcome = trainer.train(load_experiment(EXP, list(overrides)), log_fn=messages.append, **kwargs)
    return outcome, messages


@pytest.fixture
def run_root(tmp_path):
    write_experiment(tmp_path, config=SHORT)
    return tmp_path


# -- devices ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has n CUDA GPUs (0: none), A100s (8.0) that the build can drive: a mock of GPUs this
    machine lacks (torch.device('cuda:N') needs no GPU to exist). No GPU was allocated to this process."""
    def set_count(n: int):
        monkeypatch.setattr(devices, "cuda_count", lambda: n)
        monkeypatch.setattr(devices, "device_capability", lambda index: (8, 0))
        monkeypatch.setattr(devices, "arch_list", lambda: ["sm_80"])
        for var in devices.GPU_VARS:
            monkeypatch.delenv(var, raising=False)
    return set_count


def test_cuda_without_a_gpu_is_one_line(gpus):
    gpus(0)
    for name in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(UserError, match=f"train.device={name}, but no CUDA GPU is available here.*cpu or auto"):
            devices.resolve_device(name, DistContext())
    assert devices.resolve_device("auto", DistContext()).type == "cpu"


def test_cuda_index_beyond_the_gpus(gpus):
    gpus(2)
    assert devices.resolve_device("cuda:1", DistContext()) == torch.device("cuda:1")
    assert devices.resolve_device("cuda", DistContext(rank=3, local_rank=3, world_size=4)) == torch.device("cuda:1")
    with pytest.raises(UserError, match=r"cuda:2, but this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        devices.resolve_device("cuda:2", DistContext())
    with pytest.raises(ConfigError, match="--device: 'tpu' is not a device"):
        devices.resolve_device("tpu", DistContext(), "--device")


def test_train_on_cuda_without_a_gpu_through_the_cli(run_root, gpus, capsys):
    gpus(0)
    with roots(run_root):
        assert main(["train", EXP, "train.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.device=cuda, but no CUDA GPU") and len(err.splitlines()) == 1, err


# -- starting over: the old run is moved aside, never deleted --------------------------------------------------------

def _old_run_outputs(root):
    """An earlier run's files beside its metrics: samples, eval, plots, report, and the job records that stay."""
    out = root / "experiments" / EXP
    for rel in ("samples/step0000004-ddim5.png", "samples/step0000004-ddim5.json", "eval/step0000004.json",
                "loss.png", "forward_process.png", "report.json", "index.html", "logs/123_0_log.out",
                "jobs.json", "submitted_config.yaml", "metrics.old-20250101-000000.jsonl"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(rel)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


STAY = {"logs/123_0_log.out", "jobs.json", "submitted_config.yaml", "metrics.old-20250101-000000.jsonl"}


def _check_moved_aside(root, before_outputs, before_ckpts, messages, why):
    out = root / "experiments" / EXP
    [archive] = sorted(out.glob("old-*"))
    [ckpt_archive] = sorted(ckpt_dir(root).parent.glob(f"{EXP}.old-*"))
    assert ckpt_archive.name == f"{EXP}.{archive.name}"
    assert _snapshot(ckpt_archive) == before_ckpts  # every old checkpoint, byte for byte
    assert _snapshot(archive) == {k: v for k, v in before_outputs.items() if k not in STAY}
    assert all((out / k).read_bytes() == before_outputs[k] for k in STAY)  # the job records stay where they were
    assert not (out / "samples").exists() and not (out / "eval").exists() and not (out / "report.json").exists()
    lines = [m for m in messages if "aside" in m]
    assert lines == [f"{why}: moved the previous run of {EXP} aside to {ckpt_archive} and {archive}"], messages


def test_restart_moves_every_old_run_artefact_aside(run_root):
    _train(run_root)
    before_outputs, before_ckpts = _old_run_outputs(run_root), _snapshot(ckpt_dir(run_root))
    outcome, messages = _train(run_root, "train.restart=true", "train.steps=2")
    assert outcome.step == 2
    _check_moved_aside(run_root, before_outputs, before_ckpts, messages, "train.restart=true")
    assert [r["step"] for r in metrics_lines(run_root)] == [2]


def _usr2_at(step):
    """after_step: SIGUSR2 to this process once the run reaches ``step`` (the trainer's flag handler catches it)."""
    return lambda run: os.kill(os.getpid(), signal.SIGUSR2) if run.step == step else None


def _archives(root):
    return sorted(p.name for p in ckpt_dir(root).parent.glob(f"{EXP}.old-*")), \
        sorted(p.name for p in (root / "experiments" / EXP).glob("old-*"))


def test_restart_with_a_token_starts_over_once_and_its_reruns_resume(run_root):
    """A batch job re-runs its config from the top at every requeue: with the submission's token, train.restart=true
    starts over once and every later run of the same submission resumes. A new token (submission) starts over again,
    and so does every run without one (a workstation)."""
    _train(run_root)
    outcome, messages = _train(run_root, "train.restart=true", restart_token="sub-1", after_step=_usr2_at(2))
    assert outcome.status == "interrupted" and outcome.step == 2
    assert [len(a) for a in _archives(run_root)] == [1, 1] and any("train.restart=true: moved" in m for m in messages)
    outcome, messages = _train(run_root, "train.restart=true", restart_token="sub-1")  # the requeued run
    assert outcome.status == "finished" and any(m.startswith(f"resuming {EXP} from") and "(step 2/4)" in m
                                                for m in messages), messages
    assert [len(a) for a in _archives(run_root)] == [1, 1] and not any("aside" in m for m in messages)
    _train(run_root, "train.restart=true", restart_token="sub-2")  # the next submission
    assert [len(a) for a in _archives(run_root)] == [2, 2]
    _train(run_root, "train.restart=true")  # make local
    _, messages = _train(run_root, "train.restart=true")
    assert [len(a) for a in _archives(run_root)] == [4, 4] and any("train.restart=true: moved" in m for m in messages)


def test_restart_with_a_token_killed_before_its_first_checkpoint_does_not_move_itself_aside(run_root):
    _train(run_root)

    def crash(run):
        raise RuntimeError("node failure")

    with pytest.raises(RuntimeError):
        _train(run_root, "train.restart=true", restart_token="sub-1", after_step=crash)
    outcome, messages = _train(run_root, "train.restart=true", restart_token="sub-1")
    assert outcome.status == "finished" and outcome.step == 4
    assert [len(a) for a in _archives(run_root)] == [1, 1], messages


def test_the_stop_line_takes_the_callers_advice(run_root):
    _, messages = _train(run_root, after_step=_usr2_at(2))
    assert messages[-1].endswith("; running the same command again continues from there"), messages
    _, messages = _train(run_root, "train.steps=8", after_step=_usr2_at(6), stop_advice=lambda sig: f"{sig}: wait")
    assert messages[-1].startswith("SIGUSR2 received: saved step 6 to ") and messages[-1].endswith("; SIGUSR2: wait")


def test_every_checkpoint_corrupt_moves_the_history_aside_instead_of_deleting_it(run_root):
    _train(run_root)
    for path in ckpt_dir(run_root).glob("step-*.safetensors"):
        path.write_bytes(path.read_bytes()[:100])
    before_outputs, before_ckpts = _old_run_outputs(run_root), _snapshot(ckpt_dir(run_root))
    assert [r["step"] for r in metrics_lines(run_root)] == [2, 4]  # the history that must not be lost
    outcome, messages = _train(run_root, "train.steps=2")
    assert outcome.step == 2 and any("no usable checkpoint left" in m for m in messages)
    _check_moved_aside(run_root, before_outputs, before_ckpts, messages, "no checkpoint to resume from")


def test_a_first_run_moves_nothing(run_root):
    (run_root / "experiments" / EXP / "logs").mkdir(parents=True)  # a submitted job's log folder: not a run
    (run_root / "experiments" / EXP / "index.html").write_text("report of a run not started yet")
    _, messages = _train(run_root)
    out = run_root / "experiments" / EXP
    assert not any("aside" in m for m in messages) and not list(out.glob("old-*")) and (out / "logs").is_dir()


# -- resuming: metrics after the checkpoint are kept, not dropped -----------------------------------------------------

def test_resume_moves_the_lines_after_the_checkpoint_to_rewound(run_root):
    _train(run_root, "train.steps=3")  # checkpoint at 3, metrics at 2 and 3
    metrics = run_root / "experiments" / EXP / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    extra = [json.dumps({"step": 4, "loss": 1.0}), json.dumps({"step": "x"}), '{"step": 5, "lo']
    metrics.write_text("\n".join(lines + extra) + "\n")
    _, messages = _train(run_root, "train.steps=4")
    assert [r["step"] for r in metrics_lines(run_root)] == [2, 3, 4]
    rewound = metrics.with_name("metrics.rewound.jsonl").read_text().splitlines()
    assert rewound == extra
    assert f"moved 3 metrics lines logged after step 3 to {metrics.with_name('metrics.rewound.jsonl')}" in messages


# -- nothing left to train -------------------------------------------------------------------------------------------

def test_target_already_passed_says_so_and_restores_the_pointer(run_root):
    _train(run_root)
    folder = ckpt_dir(run_root)
    (folder / "latest.json").unlink()
    before = sorted(p.name for p in folder.iterdir())
    outcome, messages = _train(run_root, "train.steps=1")
    assert outcome.status == "finished" and outcome.step == 4
    assert f"{EXP} is already at step 4, past train.steps=1: nothing to train (raise train.steps to go on)" in messages
    pointer = json.loads((folder / "latest.json").read_text())
    assert pointer["file"] == "step-000000004.safetensors" and outcome.checkpoint == folder / pointer["file"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(before + ["latest.json"])
    outcome, messages = _train(run_root)  # at the target exactly; the pointer is fine now, nothing is written
    assert f"{EXP} is already at step 4: nothing to train (raise train.steps to go on)" in messages
    assert not any("rewrote" in m for m in messages)


# -- throughput and terminal output ------------------------------------------------------------------------------------

def test_throughput_after_a_resume_counts_only_this_process(run_root, monkeypatch):
    """A fake clock that advances one second per training step: every window must report batch_size img/s."""
    clock = [0.0]
    monkeypatch.setattr(train_loop, "time", types.SimpleNamespace(monotonic=lambda: clock[0], strftime=lambda f: "t"))
    step = trainer.Run.train_step

    def timed_step(run):
        clock[0] += 1.0
        return step(run)

    monkeypatch.setattr(trainer.Run, "train_step", timed_step)

    def stop_at_3(run):
        if run.step == 3:
            os.kill(os.getpid(), signal.SIGUSR2)

    outcome, _ = _train(run_root, after_step=stop_at_3)  # checkpoint at 3, in the middle of the window 2..4
    assert outcome.status == "interrupted" and outcome.step == 3
    _train(run_root)
    rates = [r["img_per_s"] for r in metrics_lines(run_root, timing=True)]
    assert rates == [SHORT["data"]["batch_size"]] * 2, rates


def test_terminal_shows_the_bar_and_the_loss_lines(run_root, monkeypatch, capsys):
    monkeypatch.setattr(logging_utils, "interactive", lambda: True)
    with roots(run_root):
        trainer.train(load_experiment(EXP))
    out = capsys.readouterr().out
    assert "steps/s" in out and f"[{'#' * 24}] 4/4" in out
    logged = [ln.split("\r")[-1] for ln in out.split("\n") if "loss" in ln]
    assert [ln.split()[:2] for ln in logged] == [["step", "2/4"], ["step", "4/4"]], out
    assert all(ln.endswith("img/s") for ln in logged), out
    assert logging_utils.Progress.drawn is None


# -- divergence ----------------------------------------------------------------------------------------------------

DIVERGING = {**TINY, "train": {**TINY["train"], "steps": 6, "log_every": 4, "checkpoint_every": 2}}


def poison_at(step: int):
    """An after_step hook that puts a NaN into one weight at ``step``: what an exploding update does."""
    def hook(run):
        if run.step == step:
            with torch.no_grad():
                next(run.model.parameters()).view(-1)[0] = float("nan")
    return hook


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    write_experiment(tmp_path, config=DIVERGING)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 4: the loss is nan \(mean of steps 1-4\); "
                       r"nothing saved, the last checkpoint \(step-000000002.safetensors\) is kept"):
        _train(tmp_path, after_step=poison_at(3))
    assert sorted(p.name for p in ckpt_dir(tmp_path).glob("step-*")) == ["step-000000002.safetensors"]
    assert not (tmp_path / "experiments" / EXP / "metrics.jsonl").exists()  # the step-4 line (NaN) was never written
    # a lower learning rate is not part of the checkpoint's identity: the run goes on from step 2
    outcome, messages = _train(tmp_path, "train.lr=0.0005")
    assert outcome.step == 6 and any("resuming" in m and "step 2/6" in m for m in messages)


def test_nan_weights_are_never_saved_even_between_log_lines(tmp_path):
    write_experiment(tmp_path, config=DIVERGING)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 2: 1 weight tensors hold NaN or infinity "
                       r"\(down.0.0.weight\); nothing saved \(there is no earlier checkpoint\)\. Lower train.lr "
                       r"\(now 0.001\) or set train.grad_clip \(e.g. 1.0\), then run again$"):  # fp32: no precision tip
        _train(tmp_path, after_step=poison_at(2))
    assert list(ckpt_dir(tmp_path).glob("step-*")) == []


def test_a_diverged_run_is_one_line_and_exit_code_4(tmp_path, monkeypatch, capsys):
    write_experiment(tmp_path, config=DIVERGING)
    original = trainer.Run.train_step

    def exploding_step(run):
        loss = original(run)
        poison_at(3)(run)
        return loss

    monkeypatch.setattr(trainer.Run, "train_step", exploding_step)
    with roots(tmp_path):
        assert main(["train", EXP]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: training {EXP} diverged at step 4")


def test_a_closed_pipe_does_not_stop_training(tmp_path):
    """``ddpm-hpc train ... | head -1``: the reader goes away after one line; the run still finishes and saves."""
    write_experiment(tmp_path, config={**TINY, "train": {**TINY["train"], "steps": 12, "log_every": 1}})
    proc = start_cli(tmp_path, "train", EXP)
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after its line
    assert proc.wait(timeout=300) == 0 and first
    assert (ckpt_dir(tmp_path) / "step-000000012.safetensors").is_file()
