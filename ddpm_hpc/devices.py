"""Which device a run uses, and whether the installed torch can drive the GPU it was given.

The decisions are pure functions of a GPU's compute capability and the torch build's arch list (``runs_on``,
``native_bf16``, ``precision_for``), tested over a table of real GPUs and builds. The rest reads them from torch:
``resolve_device`` picks the device of ``train.device`` and refuses, with :class:`UnsupportedGPU`, a GPU this torch
has no kernels for and a job that was given a GPU it cannot use at all (driver too old, CPU-only build).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from .config import check_device
from .errors import UnsupportedGPU, UserError

if TYPE_CHECKING:
    from .distributed import DistContext

# Variables that say this process was given a GPU (SLURM sets them for --gres=gpu / --gpus jobs).
GPU_VARS = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
NO_GPU_VALUES = ("", "-1", "none", "nodevfiles")  # values that hide every GPU rather than name one
# The oldest NVIDIA driver each CUDA major version's builds run on (NVIDIA's CUDA compatibility tables).
MIN_DRIVER = {11: "450.80", 12: "525.60", 13: "580"}
ARCH_HINT = 'python -c "import torch; print(torch.cuda.get_arch_list())"'


def _parse_arch(entry: str) -> tuple[str, int, int] | None:
    """``sm_86`` -> ("sm", 8, 6); ``compute_90`` -> ("compute", 9, 0); ``sm_90a`` -> ("sm", 9, 0); else None."""
    match = re.fullmatch(r"(sm|compute)_(\d+)(\d)[a-z]?", entry.strip())
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


def runs_on(capability: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether a build with ``arch_list`` (``torch.cuda.get_arch_list()``) has code for a GPU of ``capability``.
    CUDA's rules: an ``sm_XY`` binary runs on the same major version at minor >= Y; a ``compute_XY`` PTX entry is
    compiled by the driver's JIT for any device >= X.Y (a slow first start, then cached)."""
    major, minor = capability
    for entry in arch_list:
        parsed = _parse_arch(entry)
        if parsed is None:
            continue
        kind, a_major, a_minor = parsed
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def native_bf16(capability: tuple[int, int]) -> bool:
    """bf16 arithmetic in hardware (Ampere, 8.0, and newer). ``torch.cuda.is_bf16_supported()`` also says yes on
    Turing and Pascal, where bf16 is emulated and slow (cuDNN's bf16 convolutions need sm_80)."""
    return tuple(capability) >= (8, 0)


def precision_for(requested: str, device_type: str, capability: tuple[int, int] | None, cpu_bf16: bool) -> str:
    """``train.precision`` resolved to "bf16", "fp16" or "fp32". ``auto``: on a GPU bf16 where it is native (8.0 and
    newer), fp16 autocast with a gradient scaler on 7.x (Volta, Turing: fp16 tensor cores), fp32 below (Pascal); on a
    CPU bf16 only with native bf16 instructions (``fast_paths.cpu_has_bf16``), else fp32. An explicit choice stands."""
    if requested != "auto":
        return requested
    if device_type == "cuda" and capability is not None:
        if native_bf16(capability):
            return "bf16"
        return "fp16" if capability[0] == 7 else "fp32"
    return "bf16" if device_type == "cpu" and cpu_bf16 else "fp32"


# -- what torch reports (the functions tests monkeypatch to stand in for GPUs this machine lacks) ---------------------
def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_capability(index: int) -> tuple[int, int]:
    return tuple(torch.cuda.get_device_capability(index))


def device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def arch_list() -> list[str]:
    return list(torch.cuda.get_arch_list()) if torch.version.cuda else []


def driver_version() -> str | None:
    """The NVIDIA driver's version, from /proc (Linux) or nvidia-smi; None when neither is there."""
    proc_file = Path("/proc/driver/nvidia/version")
    try:
        match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", proc_file.read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        lines = out.stdout.split()
        return lines[0] if out.returncode == 0 and lines else None
    except (OSError, subprocess.SubprocessError):
        return None


def sm(capability: tuple[int, int]) -> str:
    return f"sm_{capability[0]}{capability[1]}"


def torch_build() -> dict:
    """The installed torch: version, CUDA version (None for a CPU-only build), arch list, NVIDIA driver if found."""
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "arch_list": arch_list(),
            "driver": driver_version()}


def gpu_report() -> list[dict]:
    """One entry per visible GPU: index, name, capability ("8.0"), sm ("sm_80"), native_bf16, and whether this
    torch build has kernels for it (usable)."""
    archs, report = arch_list(), []
    for index in range(cuda_count()):
        cap = device_capability(index)
        report.append({"index": index, "name": device_name(index), "capability": f"{cap[0]}.{cap[1]}",
                       "sm": sm(cap), "native_bf16": native_bf16(cap), "usable": runs_on(cap, archs)})
    return report


def _describe_build(build: dict) -> str:
    if not build["cuda"]:
        return f"torch {build['torch']} (a CPU-only build)"
    return f"torch {build['torch']} (CUDA {build['cuda']}, kernels for {' '.join(build['arch_list']) or 'none'})"


def allocated_gpus() -> str | None:
    """``NAME=value`` of the variable saying this process was given a GPU, or None (no GPU was allocated)."""
    for var in GPU_VARS:
        value = os.environ.get(var)
        if value is not None and value.strip().lower() not in NO_GPU_VALUES:
            return f"{var}={value}"
    return None


def _driver_advice(build: dict) -> str:
    driver = build["driver"]
    if not build["cuda"]:
        return f"NVIDIA driver {driver or 'not found'}; install a CUDA build of torch"
    major = int(build["cuda"].split(".")[0])
    need = MIN_DRIVER.get(major)
    found = f"NVIDIA driver {driver}" if driver else "no NVIDIA driver found (no nvidia-smi, no /proc/driver/nvidia)"
    needs = f" (CUDA {major} builds need driver {need} or newer)" if need else ""
    return f"{found}{needs}; install a torch build for this driver, e.g. a CUDA 12.6 build"


def check_usable_gpu(device: torch.device, allocated: str | None = None) -> None:
    """Raise :class:`UnsupportedGPU` (one line, its own exit code) when ``device`` is a GPU this torch build has no
    kernels for, or when it is the CPU although a GPU was allocated (``allocated``: ``allocated_gpus()``) that torch
    cannot use. A job holding a GPU must never train on the CPU by accident; ``train.device=cpu`` does it on purpose."""
    fixes_gres = "ask for a GPU generation it has with a typed slurm.gres (e.g. slurm.gres=gpu:ampere:1)"
    if device.type == "cuda":
        index = device.index or 0
        cap, archs = device_capability(index), arch_list()
        if runs_on(cap, archs):
            return
        build = torch_build()
        raise UnsupportedGPU(
            f"the GPU {device} ({device_name(index)}, {sm(cap)}) is not supported by {_describe_build(build)}: "
            f"{fixes_gres}, or install a torch build with {sm(cap)} (e.g. the CUDA 12.6 builds keep sm_60 to "
            f"sm_90; check with {ARCH_HINT})")
    if device.type == "cpu" and allocated:
        build = torch_build()
        raise UnsupportedGPU(
            f"this job was given a GPU ({allocated}) but {_describe_build(build)} cannot use it "
            f"(torch.cuda.is_available() is False): {_driver_advice(build)} (check with {ARCH_HINT}), "
            f"or {fixes_gres}; train.device=cpu trains on the CPU on purpose")


def resolve_device(name: str, ctx: DistContext, setting: str = "train.device") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` (this rank's GPU) or ``cuda:N``, checked to be usable (``check_usable_gpu``); a GPU
    that is not there is a UserError. ``ctx``'s local rank picks the GPU among several."""
    check_device(name, setting)
    if name == "auto":
        name = "cuda" if cuda_count() > 0 else "cpu"
        if name == "cpu":
            check_usable_gpu(torch.device("cpu"), allocated_gpus())
    if name.startswith("cuda"):
        count = cuda_count()
        if count == 0:
            check_usable_gpu(torch.device("cpu"), allocated_gpus())  # given a GPU that torch cannot use
            build = "" if torch.version.cuda else f" (torch {torch.__version__} is a CPU-only build)"
            raise UserError(f"{setting}={name}, but no CUDA GPU is available here{build}; use {setting}=cpu or auto")
        if name == "cuda":
            name = f"cuda:{ctx.local_rank % count}"  # one GPU per task if SLURM bound it
        elif int(name[5:]) >= count:
            gpus = "1 CUDA GPU (cuda:0)" if count == 1 else f"{count} CUDA GPUs (cuda:0 to cuda:{count - 1})"
            raise UserError(f"{setting}={name}, but this machine has {gpus}")
    device = torch.device(name)
    check_usable_gpu(device)
    return device


def describe_device(device: torch.device) -> dict:
    """What a job's start event records about the device it uses: {"device", "gpu", "sm"} (no GPU fields on a CPU)."""
    if device.type != "cuda":
        return {"device": str(device)}
    index = device.index or 0
    return {"device": str(device), "gpu": device_name(index), "sm": sm(device_capability(index))}
