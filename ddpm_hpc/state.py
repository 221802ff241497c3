"""The training state as flat named tensors plus string metadata, the form safetensors stores.

Names: ``model.*``, ``ema.*`` (weights and buffers), ``optim.state.<param index>.<key>`` (Adam moments and step
counts), ``rng.cpu`` / ``rng.cuda.<i>`` (uint8 RNG states), ``train.*`` (running scalars). The optimizer's param
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


def load_module(module: nn.Module, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    n = len(prefix) + 1
    module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
