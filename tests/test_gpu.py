"""Checks that need a CUDA GPU. The project's CI and development machine have none, so there every test here is
skipped and says why; on a GPU node, or on a lent device machine through ``benchmarks/gpu_check.sh``, they run on
``cuda``. ``DDPM_HPC_GPU_TESTS_DEVICE=cpu`` runs the same checks on the CPU: that exercises their logic, not a GPU.

On a GPU, fp32 convolutions may use TF32 (cuDNN's default in PyTorch) and cuDNN may pick different algorithms in
different runs, so comparisons there are within float tolerance, not bitwise as on the CPU; except in
``train.deterministic`` mode, which promises bit-for-bit resume on the same GPU model and is checked bitwise."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from _train_helpers import TINY, assert_close_weights, compare, final_tensors, make_run, roots, train
from fixtures import write_mnist

from ddpm_hpc import devices
from ddpm_hpc.config import ModelConfig, build_experiment
from ddpm_hpc.fast_paths import cpu_has_bf16

DEVICE = os.environ.get("DDPM_HPC_GPU_TESTS_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU, and torch sees none on this machine")
STEPS, STOP_AT = 6, 3
LOSS_TOL = {"rtol": 3e-2, "atol": 1e-3}  # bf16 autocast, and TF32 in fp32 convolutions


def experiment(device: str = DEVICE, sample: dict | None = None, **train):
    raw = json.loads(json.dumps(TINY))
    raw["model"]["conditioning"] = "embedding"
    raw["train"].update(steps=STEPS, device=device, label_dropout=0.25, checkpoint_every=2, **train)
    raw["sample"] = sample or {}
    return build_experiment("gpu", raw, "test_gpu")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=64, n_test=10)
    return root


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    from ddpm_hpc.trainer import train as train_experiment

    root = tmp_path_factory.mktemp("uninterrupted")
    with roots(root):
        assert train_experiment(experiment(), log_fn=lambda *_: None).step == STEPS
    return final_tensors(root, "gpu")


def _interrupted_then_resumed(root, exp) -> dict[str, torch.Tensor]:
    from ddpm_hpc.trainer import train as train_experiment

    def stop_once(run):
        if run.step == STOP_AT:
            os.kill(os.getpid(), signal.SIGUSR2)  # the trainer's own handler: save at this step boundary, then stop

    with roots(root):
        first = train_experiment(exp, log_fn=lambda *_: None, after_step=stop_once)
        assert (first.status, first.step) == ("interrupted", STOP_AT)
        assert train_experiment(exp, log_fn=lambda *_: None).step == STEPS
    return final_tensors(root, "gpu")


def test_an_interrupted_gpu_run_resumes_where_it_stopped(tmp_path, uninterrupted):
    resumed = _interrupted_then_resumed(tmp_path, experiment())
    assert resumed.keys() == uninterrupted.keys()
    compare(resumed, uninterrupted, atol=1e-4, rtol=1e-3)  # the process RNG states differ by design (a new process)


def test_gpu_fast_paths_train_what_the_plain_path_trains(data_root):
    plain, _ = make_run(data_root, device=DEVICE)
    fast, _ = make_run(data_root, device=DEVICE, precision="bf16", channels_last=True, adam="fused")
    assert fast.autocast_dtype is torch.bfloat16 and fast.optimizer.param_groups[0]["fused"] is True
    torch.testing.assert_close(train(fast), train(plain), **LOSS_TOL)
    assert_close_weights(fast, plain, atol=4 * 4 * fast.exp.train.lr)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_autocast_precisions_train_what_fp32_trains(data_root, precision):
    plain, _ = make_run(data_root, device=DEVICE)
    fast, _ = make_run(data_root, device=DEVICE, precision=precision)
    assert fast.precision == precision and fast.scaler.is_enabled() == (precision == "fp16")
    torch.testing.assert_close(train(fast), train(plain), **LOSS_TOL)
    assert_close_weights(fast, plain, atol=4 * 4 * fast.exp.train.lr)


def test_precision_auto_follows_this_gpus_generation(data_root):
    """bf16 on 8.0 and newer, fp16 on 7.x, fp32 below; and the GPU is one this torch build has kernels for."""
    run, _ = make_run(data_root, device=DEVICE, precision="auto")
    if run.device.type == "cuda":
        capability = torch.cuda.get_device_capability(run.device)
        assert run.precision == devices.precision_for("auto", "cuda", capability, cpu_bf16=False)
        assert devices.gpu_report()[run.device.index or 0]["usable"] is True
    else:
        assert run.precision == devices.precision_for("auto", "cpu", None, cpu_has_bf16())


@pytest.fixture
def restore_torch_flags():
    """train.deterministic switches process-wide torch settings: put them back for the tests that follow."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved[2:]


def test_deterministic_mode_resumes_bit_for_bit(tmp_path, restore_torch_flags):
    """train.deterministic: an interrupted run resumed on the same GPU ends with the same bits as an uninterrupted
    one (without it, cuDNN autotuning, TF32 and non-deterministic kernels make that a tolerance, as above)."""
    from ddpm_hpc.trainer import train as train_experiment

    exp = experiment(deterministic=True)
    with roots(tmp_path / "uninterrupted"):
        assert train_experiment(exp, log_fn=lambda *_: None).step == STEPS
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    if DEVICE == "cuda":
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    expected = final_tensors(tmp_path / "uninterrupted", "gpu")
    resumed = _interrupted_then_resumed(tmp_path / "resumed", exp)
    differ = [k for k in expected if not k.startswith("rng.") and not torch.equal(resumed[k], expected[k])]
    assert not differ, f"deterministic mode: {len(differ)} tensors differ after a resume, e.g. {differ[:5]}"


def test_compiled_cuda_graphs_train_what_eager_trains(data_root):
    conv = ModelConfig(arch="conv")
    eager, _ = make_run(data_root, model=conv, device=DEVICE)
    graphs, logs = make_run(data_root, model=conv, device=DEVICE, compile=True, compile_mode="reduce-overhead")
    got = train(graphs, 3)
    assert not any("torch.compile failed" in line for line in logs), logs
    assert graphs.forward_model is not graphs.model
    torch.testing.assert_close(got, train(eager, 3), **LOSS_TOL)
    assert_close_weights(graphs, eager, atol=4 * 3 * graphs.exp.train.lr)


def test_a_gpu_checkpoint_loads_and_samples_on_the_cpu(tmp_path):
    """Train on the cluster's GPU, sample on a laptop: the same weights give the same predictions on both."""
    from ddpm_hpc import sampling
    from ddpm_hpc.trainer import train as train_experiment

    with roots(tmp_path):
        train_experiment(experiment(), log_fn=lambda *_: None)
        ckpt = sampling.find_checkpoint("gpu")
        _, on_cpu, prefix = sampling.load_model(ckpt, torch.device("cpu"))
        _, on_device, _ = sampling.load_model(ckpt, torch.device(DEVICE))
        assert prefix == "ema"
        x, t = torch.randn(4, 3, 32, 32), torch.full((4,), 10)
        labels = torch.arange(4)
        with torch.inference_mode():
            expected = on_cpu(x, t, labels)
            got = on_device(x.to(DEVICE), t.to(DEVICE), labels.to(DEVICE)).cpu()
        torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-2)
        grid = {"sampler": "ddim", "steps": 5, "guidance": 2, "per_class": 1}
        png = sampling.sample_experiment(experiment("cpu", grid), log_fn=lambda *_: None)
        assert png.is_file() and png.with_suffix(".json").is_file()
        gpu_exp = experiment(DEVICE, grid)
        _, model, _ = sampling.load_model(ckpt, torch.device(DEVICE))
        labels, n, _ = sampling.grid_labels(gpu_exp, torch.device(DEVICE))
        result = sampling.sample_images(gpu_exp, model, torch.device(DEVICE), labels, n)
        assert result.images.shape == (10, 3, 32, 32) and result.nfe == 2 * 5  # guidance: two passes per step
        assert torch.isfinite(result.images).all()
