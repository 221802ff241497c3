"""train.precision=fp16 (autocast fp16 + torch.amp.GradScaler, what ``auto`` picks on Volta and Turing GPUs), on the
CPU: torch has CPU fp16 autocast and a CPU GradScaler, so the same code path runs here as on a GPU. The scaler's state
is part of the checkpoint, so a run resumes exactly: after a SIGKILL, and right after a step the scaler skipped."""

from __future__ import annotations

import math
import signal

import pytest
import torch
from fixtures import write_mnist

from _train_helpers import (EXP, PLAIN, TINY, assert_close_weights, assert_same_state, ckpt_dir, latest, make_run,
                            metrics_lines, roots, run_cli, signal_at_step, start_cli, train, write_experiment)
from ddpm_hpc import checkpoint, paths

FP16 = {**TINY, "train": {**TINY["train"], "precision": "fp16"}}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=64, n_test=10)
    return root


def test_fp16_loss_curve_stays_within_tolerance_of_fp32(data_root):
    plain, _ = make_run(data_root)
    half, _ = make_run(data_root, precision="fp16")
    assert half.autocast_dtype is torch.float16 and half.scaler.is_enabled() and not plain.scaler.is_enabled()
    steps = 8
    # fp16 keeps 11 significant bits (~0.05% per rounding); the loss is computed in fp32 from the fp16 prediction.
    torch.testing.assert_close(train(half, steps), train(plain, steps), rtol=1e-2, atol=1e-3)
    assert_close_weights(half, plain, atol=4 * steps * half.exp.train.lr)
    for p in half.model.parameters():  # the master weights and Adam state stay fp32
        assert p.dtype == torch.float32 and half.optimizer.state[p]["exp_avg"].dtype == torch.float32


def _state(run) -> tuple[dict, dict]:
    return run.tensors(), run.metadata()


def test_an_overflowing_step_is_skipped_and_a_resume_right_after_it_is_exact(data_root, tmp_path):
    """A loss scale of 2^100 makes the fp16 gradients overflow (the unscaled loss stays finite): the scaler skips
    the update (weights and Adam's step count unchanged), halves the scale, and the run goes on without the NaN guard
    stepping in. A checkpoint written right after that step resumes bit for bit (fused Adam: the CPU's default)."""
    with roots(tmp_path):
        run, _ = make_run(data_root, precision="fp16", adam="fused")
        train(run, 2)
        run.scaler.update(new_scale=2.0**100)
        before = [p.detach().clone() for p in run.model.parameters()]
        steps_before = [run.optimizer.state[p]["step"].item() for p in run.model.parameters()]
        loss = run.train_step().item()
        assert math.isfinite(loss) and run.step == 3
        assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters())), "a skipped step moved weights"
        assert [run.optimizer.state[p]["step"].item() for p in run.model.parameters()] == steps_before
        assert run.scaler.get_scale() == 2.0**99 and run.scaler.state_dict()["_growth_tracker"] == 0
        run.scaler.update(new_scale=2.0**8)  # a scale these gradients fit in again: the next steps are real steps
        saved = run.save()
        tensors, _ = _state(run)
        assert float(tensors["scaler.scale"]) == 2.0**8 and int(tensors["scaler.growth_tracker"]) == 0

        resumed, _ = make_run(data_root, precision="fp16", adam="fused")
        ckpt = checkpoint.load_latest(paths.checkpoint_dir(resumed.exp.name), resumed.validate)
        assert ckpt is not None and ckpt.path == saved
        resumed.restore(ckpt)
        assert resumed.scaler.get_scale() == 2.0**8
        for r in (run, resumed):
            weights = [p.detach().clone() for p in r.model.parameters()]
            train(r, 3)
            assert not all(torch.equal(a, b) for a, b in zip(weights, r.model.parameters())), "no real step taken"
        (ta, ma), (tb, mb) = _state(run), _state(resumed)
        assert_same_state(ta, tb, ma, mb, "fp16 run resumed right after a skipped step")


def test_a_checkpoint_resumes_across_precisions(data_root, tmp_path):
    """fp32 -> fp16 starts a fresh loss scale; fp16 -> fp32 ignores the stored one (precision is no part of what is
    trained)."""
    with roots(tmp_path):
        run, _ = make_run(data_root, precision="fp32")
        train(run, 2)
        run.save()
        half, _ = make_run(data_root, precision="fp16")
        half.restore(checkpoint.load_latest(paths.checkpoint_dir(half.exp.name), half.validate))
        assert half.step == 2 and half.scaler.get_scale() == 2.0**16
        train(half, 1)
        half.save()
        plain, _ = make_run(data_root, **PLAIN)
        plain.restore(checkpoint.load_latest(paths.checkpoint_dir(plain.exp.name), plain.validate))
        assert plain.step == 3 and "scaler.scale" not in plain.tensors()


def test_sigkill_then_resume_in_fp16_is_bitwise_identical(tmp_path):
    reference = tmp_path / "reference"
    write_experiment(reference, config=FP16)
    result = run_cli(reference, "train", EXP)
    assert result.returncode == 0, result.stdout + result.stderr
    ref_tensors, ref_meta, _ = latest(reference)
    assert "scaler.scale" in ref_tensors and "scaler.growth_tracker" in ref_tensors

    killed = tmp_path / "killed"
    write_experiment(killed, config=FP16)
    rc, out = signal_at_step(start_cli(killed, "train", EXP), 10, signal.SIGKILL, delay=0.02)
    assert rc == -signal.SIGKILL, out
    assert any(ckpt_dir(killed).glob("step-*.safetensors")), "killed before its first checkpoint"
    result = run_cli(killed, "train", EXP)
    assert result.returncode == 0 and "resuming tiny from" in result.stdout, result.stdout + result.stderr
    tensors, meta, pointer = latest(killed)
    assert pointer["step"] == FP16["train"]["steps"]
    assert_same_state(tensors, ref_tensors, meta, ref_meta, "fp16 run killed at step 10 and resumed")
    assert metrics_lines(killed) == metrics_lines(reference)

