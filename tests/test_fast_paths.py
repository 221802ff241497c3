"""The fast paths (train.channels_last, train.precision=bf16, train.adam, train.compile) train the same thing as the
plain path: same losses and weights within float tolerance (bf16 tolerance where autocast is used). No timings here:
speed is measured by benchmarks/bench.py (make bench)."""

from __future__ import annotations

import shutil

import pytest
import torch
from fixtures import write_mnist

from _train_helpers import FAST_STEPS, assert_close_weights, make_run, roots, train

from ddpm_hpc import checkpoint, devices, fast_paths, paths, trainer
from ddpm_hpc.config import ModelConfig
from ddpm_hpc.fast_paths import autocast_dtype, make_adam

STEPS = FAST_STEPS  # what train() takes by default


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=64, n_test=10)
    return root


def test_channels_last_equals_plain_within_float_tolerance(data_root):
    plain, _ = make_run(data_root)
    fast, _ = make_run(data_root, channels_last=True)
    assert fast.model.down[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(train(fast), train(plain), rtol=1e-4, atol=1e-5)
    # Adam moves every weight by about lr per step whatever the gradient's size, so a weight whose gradient is ~0
    # may move the other way: compare within a few lr.
    assert_close_weights(fast, plain, atol=4 * STEPS * fast.exp.train.lr)


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_adam_kernels_equal_the_per_parameter_loop(data_root, impl):
    plain, _ = make_run(data_root)
    fast, _ = make_run(data_root, adam=impl)
    assert fast.optimizer.param_groups[0]["fused" if impl == "fused" else "foreach"] is True
    torch.testing.assert_close(train(fast), train(plain), rtol=1e-5, atol=1e-6)
    assert_close_weights(fast, plain, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_equals_plain_within_bf16_tolerance(data_root):
    plain, _ = make_run(data_root)
    fast, _ = make_run(data_root, precision="bf16")
    assert fast.autocast_dtype is torch.bfloat16 and plain.autocast_dtype is None
    # bf16 keeps 8 significant bits (~0.4% per rounding); the loss is computed in fp32 from the bf16 prediction.
    torch.testing.assert_close(train(fast), train(plain), rtol=3e-2, atol=1e-3)
    assert_close_weights(fast, plain, atol=4 * STEPS * fast.exp.train.lr)
    for p in fast.model.parameters():  # autocast: the master weights and Adam state stay fp32
        assert p.dtype == torch.float32
        assert fast.optimizer.state[p]["exp_avg"].dtype == torch.float32


def test_all_fast_paths_together_stay_within_bf16_tolerance(data_root):
    plain, _ = make_run(data_root)
    fast, _ = make_run(data_root, precision="bf16", channels_last=True, adam="fused")
    torch.testing.assert_close(train(fast), train(plain), rtol=3e-2, atol=1e-3)


def test_precision_auto_is_bf16_where_the_hardware_has_it(monkeypatch):
    monkeypatch.setattr(fast_paths, "cpu_has_bf16", lambda: True)  # e.g. AVX512-BF16 (Zen 4, Cooper Lake) or AMX
    assert autocast_dtype("auto", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    monkeypatch.setattr(fast_paths, "cpu_has_bf16", lambda: False)  # emulated bf16 would be slower than fp32
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("fp16", torch.device("cpu")) is torch.float16


@pytest.mark.parametrize("capability, dtype", [((6, 0), None), ((6, 1), None), ((7, 0), torch.float16),
                                               ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                               ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_precision_auto_on_a_gpu_goes_by_its_generation(monkeypatch, capability, dtype):
    """P100, GTX 1080, V100, RTX 2080 Ti, A100, RTX 3090, H100 (a mock of GPUs this machine lacks: the capability
    query). torch.cuda.is_bf16_supported() says yes on all of them (emulation counts), so it must not be asked."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(devices, "device_capability", lambda index: capability)
    assert autocast_dtype("auto", torch.device("cuda", 0)) is dtype
    assert autocast_dtype("fp32", torch.device("cuda", 0)) is None
    assert autocast_dtype("fp16", torch.device("cuda", 0)) is torch.float16


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adam_moments_are_laid_out_like_channels_last_weights_after_a_resume(data_root, tmp_path, impl):
    """Checkpoints store contiguous tensors; CUDA's fused Adam refuses moments whose layout differs from their
    parameter's ("params, grads, exp_avgs, and exp_avg_sqs must have same ... layout"), so a resumed channels_last run
    would crash at its first step. The CPU kernels accept either layout: the strides themselves are checked here."""
    with roots(tmp_path):
        run, _ = make_run(data_root, channels_last=True, adam=impl)
        train(run, 2)
        run.save()
        resumed, _ = make_run(data_root, channels_last=True, adam=impl)
        resumed.restore(checkpoint.load_latest(paths.checkpoint_dir(resumed.exp.name), resumed.validate))
    four_d = [p for p in resumed.model.parameters() if p.dim() == 4]
    assert any(not p.is_contiguous() for p in four_d)  # channels_last weights (1x1 or 1-channel ones are both)
    for p in resumed.model.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            moment = resumed.optimizer.state[p][key]
            assert moment.stride() == p.stride(), f"{key} of a {tuple(p.shape)} weight: {moment.stride()}"
    torch.testing.assert_close(train(resumed, 1), train(run, 1), rtol=0, atol=0)  # and it trains on identically


@pytest.mark.parametrize("impl", ["fused", "foreach", "for-loop"])
def test_adam_kernel_survives_loading_another_kernels_state(impl):
    """A checkpoint's param groups carry the saving run's kernel flags; loading must not switch ours."""
    net = torch.nn.Linear(3, 2)
    saving = make_adam(net.parameters(), 1e-3, "for-loop" if impl == "fused" else "fused", torch.device("cpu"))
    net(torch.randn(4, 3)).sum().backward()
    saving.step()
    ours = make_adam(net.parameters(), 1e-3, impl, torch.device("cpu"))
    ours.load_state_dict(saving.state_dict())
    group = ours.param_groups[0]
    assert group["fused"] is (True if impl == "fused" else None)
    assert group["foreach"] is {"fused": None, "foreach": True, "for-loop": False}[impl]
    assert all(ours.state[p]["step"].item() == 1 for p in net.parameters())
    ours.step()  # the loaded state works with our kernel
    assert all(ours.state[p]["step"].item() == 2 for p in net.parameters())


def test_compile_failure_falls_back_to_eager_with_the_same_step(data_root, monkeypatch):
    """A backend that fails at the first step (here: after the forward ran and moved BatchNorm's statistics):
    the step is redone in eager mode and the run equals a plain one."""

    class Broken(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            self.model(*args)  # BatchNorm running statistics move, as a compiled forward's would
            raise RuntimeError("backend compiler failed: no C++ compiler")

    monkeypatch.setattr(trainer, "compile_model", lambda model, log_fn, mode="default": Broken(model))
    fast, logs = make_run(data_root, compile=True)
    plain, _ = make_run(data_root)
    assert train(fast) == train(plain)
    assert any("torch.compile failed" in line and "eager" in line for line in logs)
    assert fast.forward_model is fast.model
    assert_close_weights(fast, plain, atol=0.0)  # bitwise: the failed attempt left no trace


def test_compile_equals_eager_within_float_tolerance(data_root):
    if shutil.which("gcc") is None and shutil.which("cc") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile's CPU backend (inductor) needs a C++ compiler; none found")
    # The practical's first network (conv-BN-ReLU-conv): compiles in seconds, unlike the U-Net (~30 s on 2 cores).
    conv = ModelConfig(arch="conv")
    plain, _ = make_run(data_root, model=conv)
    fast, logs = make_run(data_root, model=conv, compile=True, adam="fused")
    got = train(fast, 3)
    if any("torch.compile failed" in line for line in logs):
        pytest.skip(f"torch.compile does not work here: {logs}")
    assert fast.forward_model is not fast.model
    torch.testing.assert_close(got, train(plain, 3), rtol=1e-4, atol=1e-5)
    assert_close_weights(fast, plain, atol=4 * 3 * fast.exp.train.lr)
