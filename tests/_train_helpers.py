"""Helpers for the checkpoint and resume tests: tiny experiments in temporary roots, the real CLI in a subprocess,
and tensor-by-tensor comparisons. Nothing here reads a checkpoint with anything but safetensors.

Run as a script, this module is the ``ddpm-hpc`` command line with one addition for crash tests:
``DDPM_TEST_CRASH=<point>:<n>`` makes the process SIGKILL itself at the n-th checkpoint write (1-based), at

- ``tmp``: halfway through writing the temporary ``.step-N.safetensors.tmp-PID`` file (a partial file on disk),
- ``renamed``: right after the new ``step-N.safetensors`` is renamed into place, before ``latest.json`` is rewritten,
- ``pointer``: halfway through writing the temporary ``latest.json`` file.

The kill is a real SIGKILL from inside the real write path (``safe_write.atomic_write``), not a simulation of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ddpm_hpc.config import ModelConfig

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
EXP = "tiny"

# A seed U-Net small enough for ~20 ms steps on one busy CPU core, with EMA, so every kind of state is exercised.
# Checkpoints (every 3 steps) fall inside metrics windows (every 2), so the partial window must survive a restart.
TINY = {
    "data": {"dataset": "digits", "batch_size": 8},
    "model": {"arch": "seed_unet", "channels": [8, 8, 16, 16, 16]},
    "diffusion": {"T": 50},
    "train": {"steps": 30, "lr": 0.001, "ema_decay": 0.9, "log_every": 2, "checkpoint_every": 3,
              "checkpoint_minutes": 0, "keep_checkpoints": 3, "device": "cpu",
              # fp32, whatever the CPU: the multi-rank tests' tolerances are derived for fp32 sums (precision=auto
              # is bf16 on CPUs with native bf16; tests/test_fast_paths.py covers bf16)
              "precision": "fp32"},
}


def write_experiment(root: Path, name: str = EXP, config: dict | None = None) -> Path:
    (root / "experiments").mkdir(parents=True, exist_ok=True)
    path = root / "experiments" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config or TINY))
    return path


def env_for(root: Path, **extra: str) -> dict:
    """The environment of a CLI subprocess: roots under ``root``, one thread (the CI machine has 2 busy cores)."""
    env = dict(os.environ)
    env.update(DDPM_HPC_EXPERIMENTS=str(root / "experiments"), DDPM_HPC_CHECKPOINTS=str(root / "checkpoints"),
               DDPM_HPC_DATA=str(root / "data"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg")
    env.pop("DDPM_TEST_CRASH", None)
    env.update(extra)
    return env


@contextlib.contextmanager
def roots(root: Path):
    """In-process runs: point the DDPM_HPC_* roots at ``root`` for the duration."""
    keys = ("DDPM_HPC_EXPERIMENTS", "DDPM_HPC_CHECKPOINTS", "DDPM_HPC_DATA")
    with pytest.MonkeyPatch.context() as mp:  # restores the previous values (or their absence) afterwards
        for key, value in env_for(root).items():
            if key in keys:
                mp.setenv(key, value)
        yield root


def cli_command(*args: str, crash: str | None = None) -> list[str]:
    if crash:
        return [PYTHON, str(Path(__file__).resolve()), *args]
    return [PYTHON, "-m", "ddpm_hpc", *args]


def run_cli(root: Path, *args: str, crash: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = env_for(root, **({"DDPM_TEST_CRASH": crash} if crash else {}))
    return subprocess.run(cli_command(*args, crash=crash), env=env, cwd=root, capture_output=True, text=True,
                          timeout=timeout)


def start_cli(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(cli_command(*args), env=env_for(root), cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)


def signal_at_step(proc: subprocess.Popen, step: int, sig: int, delay: float = 0.0,
                   timeout: float = 300) -> tuple[int, str]:
    """Send ``sig`` ``delay`` seconds after the run has logged a step >= ``step`` (so it lands anywhere in the
    following steps or checkpoint writes); wait for the process to end. Returns (exit code, everything it printed)."""
    out, sent, deadline = [], False, time.monotonic() + timeout
    for line in proc.stdout:
        out.append(line)
        if not sent and line.startswith("step ") and int(line.split()[1].split("/")[0]) >= step:
            time.sleep(delay)
            proc.send_signal(sig)
            sent = True
        if time.monotonic() > deadline:
            proc.kill()
            break
    rc = proc.wait(timeout=60)
    return rc, "".join(out)


def ckpt_dir(root: Path, name: str = EXP) -> Path:
    return root / "checkpoints" / name


def metrics_lines(root: Path, name: str = EXP, timing: bool = False) -> list[dict]:
    """metrics.jsonl as dicts; without ``timing`` the wall-clock fields (img_per_s, wall_seconds) are dropped,
    everything else must match an uninterrupted run exactly."""
    rows = [json.loads(ln) for ln in (root / "experiments" / name / "metrics.jsonl").read_text().splitlines()]
    return rows if timing else [{k: v for k, v in r.items() if k not in ("img_per_s", "wall_seconds")} for r in rows]


def latest(root: Path, name: str = EXP):
    """(tensors, metadata, pointer) of the checkpoint ``latest.json`` names, read with safetensors only."""
    from safetensors import safe_open

    folder = ckpt_dir(root, name)
    pointer = json.loads((folder / "latest.json").read_text())
    with safe_open(folder / pointer["file"], framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata(), pointer


def assert_same_state(tensors_a: dict, tensors_b: dict, meta_a: dict, meta_b: dict, what: str = "") -> None:
    """Every tensor bit-for-bit equal (torch.equal, same dtype), and the metadata equal except wall-clock time."""
    import torch

    assert sorted(tensors_a) == sorted(tensors_b), f"{what}: tensor names differ: {set(tensors_a) ^ set(tensors_b)}"
    differ = [k for k in sorted(tensors_a)
              if tensors_a[k].dtype != tensors_b[k].dtype or not torch.equal(tensors_a[k], tensors_b[k])]
    assert not differ, f"{what}: {len(differ)} of {len(tensors_a)} tensors differ, e.g. {differ[:5]}"
    ignore = {"wall_seconds", "content_sha256"}  # time differs, and so therefore does the digest that covers it
    a = {k: v for k, v in meta_a.items() if k not in ignore}
    b = {k: v for k, v in meta_b.items() if k not in ignore}
    assert a == b, f"{what}: metadata differs in {sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))}"


def complete_files_only(folder: Path) -> list[str]:
    """Check the atomicity promise after a kill: every file under a final name parses completely and every hash that
    latest.json records matches. Returns the names of leftover temporary files (allowed: they are never read)."""
    import hashlib

    from safetensors.torch import load

    pointer = json.loads((folder / "latest.json").read_text()) if (folder / "latest.json").exists() else {}
    recorded = {h["file"]: h["sha256"] for h in pointer.get("history", [])}
    for path in folder.glob("step-*.safetensors"):
        data = path.read_bytes()
        load(data)  # raises on a partial file
        if recorded.get(path.name):  # null: a file the pointer lists without a hash (it verifies by its own digest)
            assert hashlib.sha256(data).hexdigest() == recorded[path.name], f"{path.name}: hash differs from pointer"
    return sorted(p.name for p in folder.glob(".*.tmp-*"))


def _install_crash(spec: str) -> None:
    from ddpm_hpc import checkpoint, safe_write

    point, _, n = spec.partition(":")
    target, count = int(n or 1), {"n": 0}
    real_open, real_replace = open, os.replace

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            die()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def crash_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        name = Path(path).name
        if "w" in mode and (point == "tmp" and name.startswith(".step-") or
                            point == "pointer" and name.startswith(f".{checkpoint.POINTER}")):
            count["n"] += 1
            if count["n"] == target:
                return HalfWriter(f)
        return f

    class CrashOs:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            real_replace(src, dst)
            if point == "renamed" and Path(dst).name.startswith("step-"):
                count["n"] += 1
                if count["n"] == target:
                    die()

    safe_write.open = crash_open  # module global: shadows the builtin inside safe_write.py only
    safe_write.os = CrashOs()


# -- comparing runs: several ranks, fast paths, GPUs -------------------------------------------------------------------

def free_port() -> int:
    """A TCP port free on this machine now (for a process group's MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



# Measured max |difference| after 6 steps: 2.9e-6 (over weights, EMA, Adam moments, losses); lr=1e-3 per step.
ATOL, RTOL = 5e-5, 1e-4


def final_tensors(root: Path, name: str = "ddp") -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint ``latest.json`` names under ``root``'s checkpoints of ``name``."""
    from safetensors.torch import load_file

    folder = root / "checkpoints" / name
    pointer = json.loads((folder / "latest.json").read_text())
    return load_file(folder / pointer["file"])


def compare(ours: dict, reference: dict, atol: float = ATOL, rtol: float = RTOL) -> float:
    """Every tensor but the process RNG states is close to the reference (integer ones equal); returns max |diff|."""
    keys = [k for k in reference if not k.startswith("rng.")]
    assert sorted(k for k in ours if not k.startswith("rng.")) == sorted(keys)
    worst = 0.0
    for k in keys:
        a, b = ours[k], reference[k]
        assert a.shape == b.shape and a.dtype == b.dtype, k
        if not a.is_floating_point():
            assert torch.equal(a, b), k
            continue
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, k=k: f"{k}: {m}")
        worst = max(worst, (a - b).abs().max().item())
    return worst


PLAIN = {"precision": "fp32", "channels_last": False, "compile": False, "adam": "for-loop"}
# The seed U-Net's architecture (strided 4x4 convolutions, transposed convolutions, BatchNorm, skips), narrower so
# the tests stay fast; conditional with label dropout, so the label path runs too.
SMALL = ModelConfig(arch="seed_unet", channels=(16, 16, 32, 32, 48), conditioning="embedding", time_embedding=True)
FAST_STEPS = 4


def make_run(root, model=SMALL, device: str = "cpu", **train) -> tuple:
    """A ``trainer.Run`` on the MNIST files under ``root`` (fp32, no fast path unless ``train`` asks), and its log."""
    from ddpm_hpc.config import DataConfig, Experiment, TrainConfig
    from ddpm_hpc.trainer import Run

    logs: list[str] = []
    exp = Experiment(name="fast", data=DataConfig(dataset="mnist", root=str(root), batch_size=8), model=model,
                     train=TrainConfig(device=device, label_dropout=0.2 if model.conditioning != "none" else 0.0,
                                       **{**PLAIN, **train}))
    return Run(exp, log_fn=logs.append), logs


def train(run, steps: int = FAST_STEPS) -> list[float]:
    run.model.train()
    return [run.train_step().item() for _ in range(steps)]


def weights(run) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().contiguous() for k, v in run.model.state_dict().items()}


def assert_close_weights(a, b, atol: float, rtol: float = 0.0):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")


if __name__ == "__main__":
    if os.environ.get("DDPM_TEST_CRASH"):
        _install_crash(os.environ["DDPM_TEST_CRASH"])
    from ddpm_hpc.cli import main

    sys.exit(main(sys.argv[1:]))
