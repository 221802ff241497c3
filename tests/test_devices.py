"""GPU decisions (ddpm_hpc/devices.py) over a table of real GPUs and real torch builds' arch lists, and the refusal of
a GPU the installed torch cannot drive. No GPU exists here: the unsupported path monkeypatches the capability query
(``devices.cuda_count``, ``device_capability``, ``device_name``, ``arch_list``): a mock of GPUs this machine lacks."""

from __future__ import annotations

import pytest
import torch

from ddpm_hpc import devices
from ddpm_hpc.devices import native_bf16, precision_for, runs_on
from ddpm_hpc.distributed import DistContext
from ddpm_hpc.errors import UnsupportedGPU, UserError

# name: compute capability
GPUS = {"P100": (6, 0), "GTX 1080": (6, 1), "V100": (7, 0), "RTX 2080 Ti": (7, 5), "A100": (8, 0),
        "RTX 3090": (8, 6), "H100": (9, 0)}
# torch 2.14.1 from the package index (CUDA 13.0), as get_arch_list() prints it on this machine
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
CU126 = ["sm_50", "sm_60", "sm_61", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]  # the CUDA 12.6 builds' range
PTX = ["sm_80", "sm_86", "compute_86"]  # a source build with PTX for 8.6 (JIT on anything newer)

USABLE = {  # GPU: (cu130, cu126, ptx)
    "P100": (False, True, False), "GTX 1080": (False, True, False), "V100": (False, True, False),
    "RTX 2080 Ti": (True, True, False), "A100": (True, True, True), "RTX 3090": (True, True, True),
    "H100": (True, True, True),
}
AUTO = {"P100": "fp32", "GTX 1080": "fp32", "V100": "fp16", "RTX 2080 Ti": "fp16", "A100": "bf16",
        "RTX 3090": "bf16", "H100": "bf16"}


@pytest.mark.parametrize("gpu", GPUS)
def test_which_builds_run_on_which_gpu(gpu):
    cap = GPUS[gpu]
    assert (runs_on(cap, CU130), runs_on(cap, CU126), runs_on(cap, PTX)) == USABLE[gpu]


def test_cuda_compatibility_rules():
    assert runs_on((8, 6), ["sm_80"])  # same major, higher minor: the sm_80 binary runs
    assert not runs_on((8, 0), ["sm_86"])  # lower minor: it does not
    assert not runs_on((9, 0), ["sm_80", "sm_86"])  # a binary never crosses a major version
    assert runs_on((9, 0), ["compute_80"]) and runs_on((12, 0), ["compute_80"])  # PTX: JIT on anything newer
    assert not runs_on((7, 5), ["compute_80"])  # but not on older
    assert runs_on((9, 0), ["sm_90a"]) and not runs_on((9, 0), []) and not runs_on((9, 0), ["gibberish"])


@pytest.mark.parametrize("gpu", GPUS)
def test_precision_auto_by_gpu_generation(gpu):
    cap = GPUS[gpu]
    assert precision_for("auto", "cuda", cap, cpu_bf16=False) == AUTO[gpu]
    assert native_bf16(cap) == (AUTO[gpu] == "bf16")
    for explicit in ("fp32", "bf16", "fp16"):
        assert precision_for(explicit, "cuda", cap, cpu_bf16=False) == explicit


def test_precision_auto_on_a_cpu():
    assert precision_for("auto", "cpu", None, cpu_bf16=True) == "bf16"
    assert precision_for("auto", "cpu", None, cpu_bf16=False) == "fp32"
    assert precision_for("fp16", "cpu", None, cpu_bf16=False) == "fp16"


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend this machine has one GPU named ``name`` of capability ``cap`` under a build with ``archs`` (a mock of
    GPUs this machine lacks: only the capability query is replaced; the decisions are the real code)."""
    for var in devices.GPU_VARS:
        monkeypatch.delenv(var, raising=False)

    def install(name: str, cap: tuple[int, int], archs: list[str], cuda: str = "13.0"):
        monkeypatch.setattr(devices, "cuda_count", lambda: 1)
        monkeypatch.setattr(devices, "device_capability", lambda index: cap)
        monkeypatch.setattr(devices, "device_name", lambda index: name)
        monkeypatch.setattr(devices, "arch_list", lambda: archs)
        monkeypatch.setattr(devices, "driver_version", lambda: "575.51")
        monkeypatch.setattr(torch.version, "cuda", cuda)
    return install


def test_a_pascal_gpu_under_the_cu130_build_is_refused_in_one_line(fake_gpu):
    fake_gpu("Tesla P100-PCIE-16GB", (6, 0), CU130)
    with pytest.raises(UnsupportedGPU) as info:
        devices.resolve_device("auto", DistContext())
    message = str(info.value)
    assert len(message.splitlines()) == 1 and info.value.exit_code == UnsupportedGPU.exit_code
    for part in ("Tesla P100-PCIE-16GB", "sm_60", f"torch {torch.__version__}", "CUDA 13.0", " ".join(CU130),
                 "slurm.gres=gpu:ampere:1", "CUDA 12.6", "get_arch_list()"):
        assert part in message, (part, message)
    assert isinstance(info.value, UserError) and UnsupportedGPU.exit_code not in (2, 3, 4)


def test_a_usable_gpu_passes_and_is_described(fake_gpu):
    fake_gpu("NVIDIA A100-SXM4-40GB", (8, 0), CU130)
    device = devices.resolve_device("cuda", DistContext())
    assert device == torch.device("cuda:0")
    assert devices.describe_device(device) == {"device": "cuda:0", "gpu": "NVIDIA A100-SXM4-40GB", "sm": "sm_80"}
    assert devices.gpu_report() == [{"index": 0, "name": "NVIDIA A100-SXM4-40GB", "capability": "8.0", "sm": "sm_80",
                                     "native_bf16": True, "usable": True}]
    fake_gpu("Tesla V100", (7, 0), CU130)
    assert devices.gpu_report()[0]["usable"] is False
    assert devices.describe_device(torch.device("cpu")) == {"device": "cpu"}


@pytest.mark.parametrize("var, value", [("CUDA_VISIBLE_DEVICES", "0"), ("SLURM_JOB_GPUS", "3")])
def test_a_job_given_a_gpu_that_torch_cannot_use_never_falls_back_to_the_cpu(monkeypatch, fake_gpu, var, value):
    fake_gpu("unused", (8, 0), CU130)
    monkeypatch.setattr(devices, "cuda_count", lambda: 0)  # e.g. a driver too old for CUDA 13
    monkeypatch.setenv(var, value)
    for name in ("auto", "cuda"):
        with pytest.raises(UnsupportedGPU) as info:
            devices.resolve_device(name, DistContext())
        message = str(info.value)
        for part in (f"{var}={value}", "CUDA 13.0", "NVIDIA driver 575.51", "580 or newer", "train.device=cpu"):
            assert part in message, (part, message)
        assert len(message.splitlines()) == 1
    assert devices.resolve_device("cpu", DistContext()) == torch.device("cpu")  # on purpose: allowed


@pytest.mark.parametrize("value", ["", "-1", "NoDevFiles"])
def test_hidden_gpus_are_not_an_allocation(monkeypatch, fake_gpu, value):
    fake_gpu("unused", (8, 0), CU130)
    monkeypatch.setattr(devices, "cuda_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert devices.resolve_device("auto", DistContext()) == torch.device("cpu")


def test_driver_version_from_proc(monkeypatch, tmp_path):
    text = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
            "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    fake = tmp_path / "version"
    fake.write_text(text)
    real_path = devices.Path
    monkeypatch.setattr(devices, "Path", lambda p: fake if p == "/proc/driver/nvidia/version" else real_path(p))
    assert devices.driver_version() == "535.104.05"


def test_torch_build_of_this_machine():
    build = devices.torch_build()
    assert build["torch"] == torch.__version__ and build["cuda"] == torch.version.cuda
    assert build["arch_list"] == (torch.cuda.get_arch_list() if torch.version.cuda else [])
