"""Who this process is in a (possibly) multi-process run. A plain run is rank 0 of 1.

``init_from_env`` reads the torchrun/SLURM variables the launcher set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) and starts torch.distributed: NCCL on GPUs, gloo on CPUs. ``sync_batchnorm`` makes BatchNorm use the
statistics of the global batch: torch's SyncBatchNorm on GPUs, :class:`CPUSyncBatchNorm` on CPUs (torch's only
runs on GPUs).

Semantics (docs/slurm.md, "Multi-GPU"): ``data.batch_size`` is the global batch; rank r trains on rows
[r*B/W, (r+1)*B/W) of it. Its loss is the MSE mean over those B/W rows, and DDP averages the gradients over the W
ranks, so with equal shares the gradient is the mean over the whole global batch: the same as one process with
batch B (up to float rounding), and the learning rate needs no scaling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def max_each(self, values, device) -> tuple[float, ...]:
        """Element-wise maximum over the ranks of several numbers, in one all-reduce (and one host sync: call it every
        few steps, not every step). Alone: the numbers themselves, no sync."""
        if not self.enabled:
            return tuple(float(v) for v in values)
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(t.tolist())

    def mean_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor (in place) by its mean over the ranks, in one all-reduce."""
        if not self.enabled or not tensors:
            return
        flat = torch.stack([t.detach().float().reshape(()) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        for t, v in zip(tensors, flat):
            t.copy_(v)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_from_env(device_kind: str) -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        kwargs = {}
        if backend == "nccl":  # bind the group to this rank's GPU (what devices.resolve_device picks too)
            index = local % max(torch.cuda.device_count(), 1)  # cuda:0 when SLURM gave each task its own GPU
            torch.cuda.set_device(index)
            kwargs["device_id"] = torch.device("cuda", index)
        dist.init_process_group(backend, rank=rank, world_size=world, **kwargs)
    return DistContext(rank, world, local)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: the backward pass sums the incoming gradients over the ranks too."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the global batch for CPU/gloo runs (torch's SyncBatchNorm needs a GPU).

    In training mode with several ranks, the per-channel mean and (biased) variance are those of all ranks' rows
    together, from all-reduced sums (two passes: the mean, then the squared deviations), and the running statistics
    are updated with them as BatchNorm2d would on the whole batch. The backward pass all-reduces the gradients of
    those sums, so each rank's input gradient includes the other ranks' losses, as with torch's SyncBatchNorm.
    Same parameters and buffers (same state_dict) as BatchNorm2d; in eval mode, or alone, it is BatchNorm2d."""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = _SumOverRanks.apply(torch.tensor([float(x.numel() // x.shape[1])], device=x.device))
        mean = _SumOverRanks.apply(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                n = float(count)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * (n / max(n - 1, 1)), factor)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``train.sync_batchnorm`` with several ranks: every BatchNorm layer normalises over the global batch."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module
