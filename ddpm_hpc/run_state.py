"""A training run's checkpoint state: what ``Run`` saves as flat tensors and string metadata, how a checkpoint is
checked against the run before it is trusted, and how the run is restored from one (names in ``state.py``)."""

from __future__ import annotations

import json

import torch

from . import __version__, checkpoint, state
from .identity import check_same_experiment


class RunState:
    """The save/restore half of ``trainer.Run`` (which sets every attribute used here)."""

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = state.module_tensors("model", self.model)
        if self.ema:
            tensors.update(state.module_tensors("ema", self.ema.model))
        optim, self._param_groups = state.optimizer_tensors(self.optimizer)
        tensors.update(optim)
        tensors.update(state.rng_tensors())
        tensors.update(state.scaler_tensors(self.scaler))
        tensors["train.loss_smooth"] = self.loss_smooth.detach().float().reshape(())
        tensors["train.loss_sum"] = self.loss_sum.detach().float().reshape(())
        tensors["train.log_window_start"] = torch.tensor(self.log_window_start, dtype=torch.int64)
        tensors["data.next_step"] = torch.tensor(self.step, dtype=torch.int64)  # the batch the run continues with
        return tensors

    def metadata(self) -> dict[str, str]:
        return {"format": "ddpm-hpc/1", "step": str(self.step), "config": self.exp.to_json(),
                "experiment": self.exp.name, "optim.param_groups": self._param_groups,
                "ema.updates": str(self.ema.updates if self.ema else 0), "wall_seconds": f"{self.wall_seconds:.3f}",
                "world_size": str(self.ctx.world_size), "versions": json.dumps(
                    {"ddpm_hpc": __version__, "torch": torch.__version__})}

    def validate(self, ckpt: checkpoint.Checkpoint) -> None:
        if ckpt.metadata.get("format") != "ddpm-hpc/1" or "config" not in ckpt.metadata:
            raise checkpoint.CorruptCheckpoint(f"{ckpt.path.name}: not a ddpm-hpc training checkpoint")
        check_same_experiment(self.exp, ckpt)  # a different experiment is refused outright, not skipped
        state.check_module(ckpt, "model", self.model)
        if self.ema and any(k.startswith("ema.") for k in ckpt.tensors):
            state.check_module(ckpt, "ema", self.ema.model)
        state.check_optimizer(ckpt, self.optimizer, ckpt.metadata.get("optim.param_groups"))
        window = ("train.loss_sum", "train.log_window_start") if "train.loss_sum" in ckpt.tensors else ()
        scaler = tuple(k for k in state.SCALER_KEYS if k in ckpt.tensors)
        state.check_scalars(ckpt, ("train.loss_smooth", "data.next_step", *window, *scaler))
        state.check_rng(ckpt)

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        t = {k: v.to(self.device) if not k.startswith("rng.") else v for k, v in ckpt.tensors.items()}
        state.load_module(self.model, "model", t)
        if self.ema:
            if any(k.startswith("ema.") for k in t):
                state.load_module(self.ema.model, "ema", t)
                self.ema.updates = int(ckpt.metadata.get("ema.updates", 0))
            else:  # EMA switched on mid-run: start it from the current weights
                self.ema.model.load_state_dict(self.model.state_dict())
        state.load_optimizer(self.optimizer, t, ckpt.metadata["optim.param_groups"])
        state.load_scaler(self.scaler, t)  # fp16 runs; an fp32/bf16 checkpoint resumed in fp16 starts a fresh scale
        for group in self.optimizer.param_groups:  # lr is not part of the identity: the config's value applies
            group["lr"] = self.exp.train.lr
        state.restore_rng(ckpt.tensors)
        self.loss_smooth = t["train.loss_smooth"].clone()
        if "train.loss_sum" in t:  # older checkpoints: the first metrics line after resuming averages fewer steps
            self.loss_sum = t["train.loss_sum"].clone()
            self.log_window_start = int(t["train.log_window_start"])
        else:
            self.log_window_start = int(ckpt.tensors["data.next_step"])
        self.step = int(ckpt.tensors["data.next_step"])
        self.wall_seconds = float(ckpt.metadata.get("wall_seconds", 0))
