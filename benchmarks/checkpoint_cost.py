"""What checkpointing costs: file size, save and load time of the seed U-Net, and the share of training time spent
saving at the default cadence.

    python benchmarks/checkpoint_cost.py [--device cpu|cuda] [--batch 16] [--steps 20] [--saves 5]

For the seed U-Net (``model.arch=seed_unet``, default channels) with Adam state, without and with EMA, it measures
(median of repeats, after warm-up): one training step at the given batch size; one ``Run.save()`` (the real path:
gather tensors, digest, serialise, atomic write with fsync and the file's SHA-256 computed alongside, pointer,
rotation) with a breakdown; one resume (``load_latest`` with validation + ``Run.restore``). The share of training time
is ``save / (interval + save)`` (``ddpm_hpc.cadence.save_overhead``) at the default cadence for the device
(``train.checkpoint_every=auto``: every 1,000 steps or 10 minutes on a CPU, every 10 minutes on a GPU) and, for
comparison, every 1,000 steps alone. The report refresh after a save is measured by ``benchmarks/bench.py``.
Checkpoints go to a temporary folder on the same file system as the system temp dir (set TMPDIR to measure another
disk).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ddpm_hpc import cadence, checkpoint, paths  # noqa: E402
from ddpm_hpc.config import DataConfig, Experiment, ModelConfig, TrainConfig  # noqa: E402
from ddpm_hpc.trainer import Run  # noqa: E402


def median_time(fn, repeats: int, sync=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def save_breakdown(run: Run, folder: Path) -> dict[str, float]:
    """The stages of checkpoint.save_checkpoint, timed one by one (same calls, same order)."""
    t = [time.perf_counter()]
    tensors, metadata = run.tensors(), run.metadata()
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    t.append(time.perf_counter())
    metadata = {**metadata, checkpoint.CONTENT_KEY: checkpoint.content_digest(cpu, metadata)}
    t.append(time.perf_counter())
    data = checkpoint.save_bytes(cpu, metadata=metadata)
    t.append(time.perf_counter())
    checkpoint._hashed_while_writing(folder / "breakdown.safetensors", data)
    t.append(time.perf_counter())
    (folder / "breakdown.safetensors").unlink()
    hashlib.sha256(data).hexdigest()  # alone, for comparison: what running it after the write would add
    t.append(time.perf_counter())
    names = ["gather", "content digest", "serialise", "write+fsync+rename with file sha256 alongside",
             "(file sha256 alone)"]
    return {n: t[i + 1] - t[i] for i, n in enumerate(names)}


def measure(ema: bool, device: str, batch: int, steps: int, saves: int, tmp: Path) -> dict:
    name = f"ckpt_cost_{'ema' if ema else 'noema'}"
    exp = Experiment(name=name, data=DataConfig(dataset="digits", batch_size=batch), model=ModelConfig(),
                     train=TrainConfig(ema_decay=0.999 if ema else 0.0, device=device))
    run = Run(exp, log_fn=lambda _: None)
    dev = run.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    run.model.train()
    for _ in range(3):  # warm-up; also creates Adam's moments, so the checkpoint holds the full state
        run.train_step()
    step_s = median_time(run.train_step, steps, sync)
    folder = paths.checkpoint_dir(name)
    run.save()  # first save creates the folder
    save_s = median_time(run.save, saves)
    parts = [save_breakdown(run, folder) for _ in range(3)]
    breakdown = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    ckpt_path = folder / checkpoint.read_pointer(folder)["file"]
    size = ckpt_path.stat().st_size
    fresh = Run(exp, log_fn=lambda _: None)

    def resume():
        fresh.restore(checkpoint.load_latest(folder, fresh.validate, warn=print))

    load_s = median_time(resume, 3, sync)
    n_params = sum(p.numel() for p in run.model.parameters())
    cfg = TrainConfig()
    every = cadence.checkpoint_every_steps(cfg.checkpoint_every, cfg.checkpoint_minutes, dev.type)
    default = cadence.save_overhead(step_s, save_s, 0.0, every, cfg.checkpoint_minutes, 0.0)
    steps = cadence.save_overhead(step_s, save_s, 0.0, cadence.CPU_CHECKPOINT_EVERY, 0.0, 0.0)
    return {"ema": ema, "params": n_params, "tensors": len(run.tensors()), "size": size, "step": step_s,
            "save": save_s, "load": load_s, "breakdown": breakdown, "interval": default["seconds_between_saves"],
            "fraction": default["fraction"], "every": every,
            "steps_per_save": default["seconds_between_saves"] / step_s, "fraction_steps": steps["fraction"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (median reported)")
    parser.add_argument("--saves", type=int, default=5, help="timed saves (median reported)")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load average {load:.1f}, device {args.device}")
    with tempfile.TemporaryDirectory(prefix="ckpt-cost-") as tmp:
        os.environ["DDPM_HPC_CHECKPOINTS"] = tmp
        for ema in (False, True):
            r = measure(ema, args.device, args.batch, args.steps, args.saves, Path(tmp))
            print(f"\nseed U-Net, default channels, {r['params'] / 1e6:.2f}M parameters, Adam"
                  f"{' + EMA' if ema else ''}: {r['tensors']} tensors")
            print(f"  checkpoint file      {r['size'] / 2**20:8.1f} MiB ({r['size']:,} bytes)")
            print(f"  save (Run.save)      {r['save'] * 1e3:8.1f} ms   = "
                  + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in r["breakdown"].items()) + " ms")
            print(f"  resume (load+verify+restore) {r['load'] * 1e3:.1f} ms")
            print(f"  train step, batch {args.batch} {r['step'] * 1e3:8.1f} ms")
            print(f"  checkpoint_every=1000 alone: a save every {1000 * r['step']:.0f} s -> "
                  f"{100 * r['fraction_steps']:.3f}% of training time spent saving")
            when = f"every {r['every']} steps or 10 min, whichever first" if r["every"] else "every 10 min"
            print(f"  save overhead at the default cadence (checkpoint_every=auto on {args.device}: {when}): a save "
                  f"every {r['interval']:.0f} s ({r['steps_per_save']:.0f} steps) -> {100 * r['fraction']:.3f}% "
                  f"(target < 1%)")


if __name__ == "__main__":
    main()
