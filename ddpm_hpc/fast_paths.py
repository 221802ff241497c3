"""The speed options of ``train`` (docs/performance.md): autocast precision and fp16 loss scaling, the Adam kernel and
torch.compile.
Each one trains the same thing as the plain path (tests/test_fast_paths.py)."""

from __future__ import annotations

import torch
from torch import nn

from . import devices

def compile_model(model: nn.Module, log_fn, mode: str = "default") -> nn.Module:
    """``train.compile``: torch.compile the forward pass (its backward is compiled with it). Weights stay shared with
    ``model``, so checkpoints are unaffected; compilation happens at the first step, which falls back to eager mode
    if it fails. ``train.compile_mode=reduce-overhead`` adds CUDA graphs on a GPU (small, launch-bound convolutions);
    on a CPU it is the same as ``default``."""
    try:
        return torch.compile(model, mode=None if mode == "default" else mode)
    except RuntimeError as exc:  # e.g. an unsupported Python version
        log_fn(f"warning: torch.compile unavailable ({exc}); training in eager mode")
        return model


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX): without it, oneDNN emulates bf16 and autocast is a slowdown."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def resolved_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` on ``device`` as "bf16", "fp16" or "fp32", by ``devices.precision_for``: ``auto`` is bf16
    on GPUs with native bf16 (compute capability 8.0, Ampere, and newer: ``torch.cuda.is_bf16_supported()`` also says
    yes on Turing and Pascal, where bf16 is emulated), fp16 with loss scaling on 7.x (Volta, Turing), fp32 on older
    GPUs; on a CPU bf16 only with native bf16 instructions (docs/performance.md: 1.5-1.7x the fp32 step on an
    AVX512-BF16 CPU, same loss curve), else fp32. Training, sampling and eval all choose by this rule."""
    capability = devices.device_capability(device.index or 0) if device.type == "cuda" else None
    return devices.precision_for(precision, device.type, capability, device.type == "cpu" and cpu_has_bf16())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device`` (``resolved_precision``), or None for plain fp32. The
    weights, gradients and Adam state stay fp32 either way."""
    return AUTOCAST[resolved_precision(precision, device)]


def autocast(device: torch.device, precision: str):
    """The autocast context of a resolved precision ("fp32": a disabled one)."""
    dtype = AUTOCAST[precision]
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16's loss scaling (a disabled scaler, whose calls pass straight through, for bf16 and fp32): the loss is
    multiplied before backward so small fp16 gradients do not flush to zero; a step whose gradients overflow is
    skipped and the scale halved (``torch.amp.GradScaler``'s defaults). Its state is part of the checkpoint."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def make_adam(params, lr: float, impl: str, device: torch.device, channels_last: bool = False) -> torch.optim.Adam:
    """``train.adam``: the same Adam update from one fused kernel, per-list (foreach) kernels or a loop over
    parameters. ``auto`` is fused, except foreach for channels_last weights on a CPU (the CPU's fused kernel copies
    every non-contiguous tensor to a contiguous one and back, each step). The choice is re-applied after a checkpoint
    is loaded, since ``load_state_dict`` would otherwise bring back the saving run's kernel with its param groups."""
    if impl == "auto":
        impl = "foreach" if device.type != "cuda" and (channels_last or device.type != "cpu") else "fused"
    flags = {"fused": True if impl == "fused" else None, "foreach": {"foreach": True, "for-loop": False}.get(impl)}
    optimizer = torch.optim.Adam(params, lr=lr, **flags)

    def keep_kernel(opt):
        for group in opt.param_groups:
            group.update(flags)
            for p in group["params"]:
                st = opt.state.get(p)
                if st and torch.is_tensor(st.get("step")):  # fused: on the parameter's device; else on the CPU
                    st["step"] = st["step"].to(device=p.device if impl == "fused" else "cpu", dtype=torch.float32)

    optimizer.register_load_state_dict_post_hook(keep_kernel)
    return optimizer
