"""Resumable training, end to end: the real CLI in a subprocess, stopped by SIGKILL (at random steps, and from inside
a checkpoint write) or by SIGUSR2 / SIGTERM / SIGINT, then resumed with the same command. The finished run must equal
an uninterrupted one bit for bit: every tensor (torch.equal), the metadata, and metrics.jsonl.

The random kill points come from DDPM_TEST_SEED (or a fresh seed, shown in any failure message).
"""

from __future__ import annotations

import os
import random
import re
import signal

import pytest

from _train_helpers import (EXP, TINY, assert_same_state, ckpt_dir, complete_files_only, latest, metrics_lines,
                            run_cli, signal_at_step, start_cli, write_experiment)
from ddpm_hpc.cli import EXIT_INTERRUPTED

STEPS = TINY["train"]["steps"]
KEEP = TINY["train"]["keep_checkpoints"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of the tiny experiment: (tensors, metadata, metrics) of its final checkpoint."""
    root = tmp_path_factory.mktemp("reference")
    write_experiment(root)
    result = run_cli(root, "train", EXP)
    assert result.returncode == 0, result.stdout + result.stderr
    tensors, metadata, pointer = latest(root)
    assert pointer["step"] == STEPS and metadata["step"] == str(STEPS)
    return tensors, metadata, metrics_lines(root)


@pytest.fixture
def rng():
    seed = int(os.environ.get("DDPM_TEST_SEED") or random.randrange(2**32))
    generator = random.Random(seed)
    generator.seed_value = seed
    return generator


def _progress(root) -> int:
    """The newest step a checkpoint file exists for (what a resume will start from, if it verifies)."""
    steps = [int(p.name[5:14]) for p in ckpt_dir(root).glob("step-*.safetensors")]
    return max(steps, default=0)


def _resumed_from(out: str) -> int:
    match = re.search(r"^resuming tiny from \S+ \(step (\d+)/", out, re.M)
    return int(match.group(1)) if match else 0


def _assert_matches_reference(root, reference, what):
    tensors, metadata, pointer = latest(root)
    ref_tensors, ref_metadata, ref_metrics = reference
    assert pointer["step"] == STEPS
    assert_same_state(tensors, ref_tensors, metadata, ref_metadata, what)
    assert metrics_lines(root) == ref_metrics, f"{what}: metrics.jsonl differs from the uninterrupted run"


def test_sigkill_anywhere_then_resume_is_bitwise_identical(tmp_path, reference, rng):
    what = f"DDPM_TEST_SEED={rng.seed_value}"
    write_experiment(tmp_path)
    folder = ckpt_dir(tmp_path)
    # External SIGKILLs at random moments (some land inside a save), and SIGKILLs from inside the write path:
    # halfway through the temporary checkpoint file, between its rename and the pointer update, and halfway through
    # the temporary latest.json. Worst case the plan reaches step ~29 of 30 (kill targets are capped), so each
    # process is killed before it finishes.
    plan = ["kill", "tmp:2", "kill", "renamed:1", "pointer:2", "kill"]
    for i, action in enumerate(plan):
        before = _progress(tmp_path)
        if action == "kill":
            target = min(before + rng.randint(1, 3), STEPS - 12)
            proc = start_cli(tmp_path, "train", EXP)
            rc, out = signal_at_step(proc, target, signal.SIGKILL, delay=rng.uniform(0, 0.05))
        else:
            result = run_cli(tmp_path, "train", EXP, crash=action)
            rc, out = result.returncode, result.stdout + result.stderr
        where = f"{what}, kill {i + 1} ({action})"
        assert rc == -signal.SIGKILL, f"{where}: exit {rc}\n{out}"
        assert "Traceback" not in out, f"{where}:\n{out}"
        # whatever the last kill interrupted, the newest file under a final name is complete and is used (after
        # "renamed", a file latest.json does not name yet: it verifies against the digest stored in it)
        assert _resumed_from(out) == before, f"{where}: did not resume from step {before}\n{out}"
        leftovers = complete_files_only(folder)  # nothing partial under a final name
        if action.startswith("tmp"):
            assert any(n.startswith(".step-") for n in leftovers), f"{where}: the write was not interrupted"
        if action.startswith("pointer"):
            assert any(n.startswith(".latest.json") for n in leftovers), f"{where}: the write was not interrupted"
        if action.startswith("renamed"):
            newest = _progress(tmp_path)
            assert latest(tmp_path)[2]["step"] < newest, f"{where}: latest.json already names step {newest}"
    result = run_cli(tmp_path, "train", EXP)
    assert result.returncode == 0, f"{what}:\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
    _assert_matches_reference(tmp_path, reference, what)
    every = TINY["train"]["checkpoint_every"]
    assert sorted(folder.glob("step-*.safetensors")) == [folder / f"step-{s:09d}.safetensors"
                                                         for s in range(STEPS - every * (KEEP - 1), STEPS + 1, every)]
    assert not list(folder.glob(".*.tmp-*")), "temporary files of killed writers were not cleaned up"


def test_stop_signals_save_at_a_step_boundary_and_resume_exactly(tmp_path, reference, rng):
    what = f"DDPM_TEST_SEED={rng.seed_value}"
    write_experiment(tmp_path)
    folder = ckpt_dir(tmp_path)
    stopped = 0
    for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        target = min(stopped + rng.randint(1, 5), STEPS - 4)
        rc, out = signal_at_step(start_cli(tmp_path, "train", EXP), target, sig, delay=rng.uniform(0, 0.05))
        where = f"{what}, {sig.name} after step {target}"
        assert rc == EXIT_INTERRUPTED, f"{where}: exit {rc}\n{out}"
        assert "Traceback" not in out, f"{where}:\n{out}"
        assert _resumed_from(out) == stopped, f"{where}: did not resume where the last signal stopped it\n{out}"
        match = re.search(rf"^{sig.name} received: saved step (\d+) to (\S+); running the same command", out, re.M)
        assert match, f"{where}: no save message\n{out}"
        step = int(match.group(1))
        assert target <= step < STEPS, f"{where}: saved step {step}"
        assert match.group(2) == str(folder / f"step-{step:09d}.safetensors")
        tensors, metadata, pointer = latest(tmp_path)
        assert pointer["step"] == step and metadata["step"] == str(step) and int(tensors["data.next_step"]) == step
        logged = [int(m) for m in re.findall(r"^step +(\d+)/", out, re.M)]
        assert max(logged) <= step and metrics_lines(tmp_path)[-1]["step"] <= step, f"{where}: trained past {step}"
        stopped = step
    result = run_cli(tmp_path, "train", EXP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _resumed_from(result.stdout) == stopped
    _assert_matches_reference(tmp_path, reference, what)
