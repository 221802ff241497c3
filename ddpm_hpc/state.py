"""The training state as flat named tensors plus string metadata, the form safetensors stores.

Names: ``model.*``, ``ema.*`` (weights and buffers), ``optim.state.<param index>.<key>`` (Adam moments and step
counts), ``rng.cpu`` / ``rng.cuda.<i>`` (uint8 RNG states), ``scaler.*`` (fp16 loss scale and its growth counter),
``train.*`` (running scalars). The optimizer's param
groups and other non-tensor values travel as JSON in the metadata.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from .checkpoint import Checkpoint, CorruptCheckpoint


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = optimizer.state_dict()
    tensors = {}
    for index, values in sd["state"].items():
        for key, value in values.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.state.{index}.{key}"] = value
    return tensors, json.dumps(sd["param_groups"])


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: str) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim.state."):
            index, key = name[len("optim.state."):].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(param_groups)})
    match_param_layouts(optimizer)


def match_param_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Lay each per-parameter state tensor (Adam's moments) out in memory like its parameter. Checkpoints hold
    contiguous tensors, while channels_last weights are not contiguous, and CUDA's fused Adam refuses moments whose
    layout differs from the parameter's."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


# The fp16 GradScaler's state: the loss scale and the count of overflow-free steps since it last changed.
SCALER_KEYS = ("scaler.scale", "scaler.growth_tracker")


def scaler_tensors(scaler: torch.amp.GradScaler) -> dict[str, torch.Tensor]:
    """The state of an enabled scaler (fp16 runs) as two scalar tensors; nothing for a disabled one."""
    if not scaler.is_enabled():
        return {}
    sd = scaler.state_dict()
    return {"scaler.scale": torch.tensor(sd["scale"], dtype=torch.float32),
            "scaler.growth_tracker": torch.tensor(sd["_growth_tracker"], dtype=torch.int64)}


def load_scaler(scaler: torch.amp.GradScaler, tensors: dict[str, torch.Tensor]) -> None:
    """Restore ``scaler_tensors``; the growth and backoff factors are the scaler's own (fixed) settings."""
    if scaler.is_enabled() and all(k in tensors for k in SCALER_KEYS):
        sd = scaler.state_dict()
        sd.update(scale=float(tensors["scaler.scale"]), _growth_tracker=int(tensors["scaler.growth_tracker"]))
        scaler.load_state_dict(sd)


def rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def check_shapes(ckpt: Checkpoint, prefix: str, module: nn.Module) -> None:
    """Every tensor the module expects must be in the file with the same shape (else the file is unusable)."""
    for key, value in module.state_dict().items():
        stored = ckpt.tensors.get(f"{prefix}.{key}")
        if stored is None:
            raise CorruptCheckpoint(f"{ckpt.path.name}: tensor {prefix}.{key} is missing")
        if stored.shape != value.shape:
            raise CorruptCheckpoint(f"{ckpt.path.name}: tensor {prefix}.{key} has shape {tuple(stored.shape)}, "
                                    f"the model expects {tuple(value.shape)}")


def check_module(ckpt: Checkpoint, prefix: str, module: nn.Module) -> None:
    """``check_shapes`` plus: no ``prefix.*`` tensor the module does not have (``load_module`` is strict)."""
    check_shapes(ckpt, prefix, module)
    expected = {f"{prefix}.{k}" for k in module.state_dict()}
    extra = sorted(k for k in ckpt.tensors if k.startswith(prefix + ".") and k not in expected)
    if extra:
        raise CorruptCheckpoint(f"{ckpt.path.name}: tensor {extra[0]} is not part of the model"
                                f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}")


def check_optimizer(ckpt: Checkpoint, optimizer: torch.optim.Optimizer, param_groups: str | None) -> None:
    """The stored optimizer state must fit ``optimizer``: same number of parameters, moments of the parameters'
    shapes. (``load_state_dict`` accepts mismatched moments and the next step would fail or silently broadcast.)"""
    name = ckpt.path.name
    params = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        groups = json.loads(param_groups or "")
        stored = [i for g in groups for i in g["params"]]
    except (ValueError, TypeError, KeyError):
        raise CorruptCheckpoint(f"{name}: metadata 'optim.param_groups' is missing or not valid JSON") from None
    if len(groups) != len(optimizer.param_groups) or len(stored) != len(params):
        raise CorruptCheckpoint(f"{name}: optimizer state is for {len(stored)} parameters in {len(groups)} groups, "
                                f"the model has {len(params)} in {len(optimizer.param_groups)}")
    for key, value in ckpt.tensors.items():
        if not key.startswith("optim.state."):
            continue
        index, _, slot = key[len("optim.state."):].partition(".")
        if not index.isdigit() or int(index) >= len(params) or not slot:
            raise CorruptCheckpoint(f"{name}: tensor {key} does not belong to any parameter")
        if value.dim() and value.shape != params[int(index)].shape:
            raise CorruptCheckpoint(f"{name}: tensor {key} has shape {tuple(value.shape)}, the parameter has "
                                    f"{tuple(params[int(index)].shape)}")


def check_scalars(ckpt: Checkpoint, names) -> None:
    """Each name must be a one-element tensor (running scalars, counters)."""
    for key in names:
        value = ckpt.tensors.get(key)
        if value is None or value.numel() != 1:
            raise CorruptCheckpoint(f"{ckpt.path.name}: tensor {key} is "
                                    f"{'missing' if value is None else f'of shape {tuple(value.shape)}, not a scalar'}")


def check_rng(ckpt: Checkpoint) -> None:
    value = ckpt.tensors.get("rng.cpu")
    expected = torch.get_rng_state()
    if value is not None and (value.dtype != torch.uint8 or value.shape != expected.shape):
        raise CorruptCheckpoint(f"{ckpt.path.name}: tensor rng.cpu is {value.dtype} {tuple(value.shape)}, "
                                f"expected uint8 {tuple(expected.shape)}")


def load_module(module: nn.Module, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    n = len(prefix) + 1
    module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
