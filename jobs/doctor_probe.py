"""The probe job of ``make doctor SUBMIT=1``: it runs on a compute node with the experiment's ``slurm:`` settings
and writes what it finds as JSON itself (the login side never reads submitit's result pickle):

- the node, the GPU(s) torch sees there, the driver, and whether this torch build can drive them (the arch check);
- whether the pre-emption/time-limit warning reaches this Python process: it sends ``scancel --signal=USR2`` to its
  own job, which is how SLURM delivers ``--signal=USR2@N`` (to the job steps, i.e. the srun task, not the batch
  shell), and reports whether its handler saw the signal;
- whether ``scontrol`` is on PATH there (the jobs requeue themselves with it);
- a micro-benchmark: a few warm-up steps, then 20 training steps of the experiment's model in each precision the
  device supports (img/s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import registry
from .doctor_report import write_json

USR2_WAIT_S = 20.0


def precisions_to_bench(device_type: str, capability: tuple[int, int] | None, cpu_bf16: bool, native_bf16) -> list:
    """fp32 always; on a GPU also fp16 (autocast with a gradient scaler) and bf16 where it is native
    (``native_bf16(capability)``, ddpm_hpc.devices); on a CPU bf16 only with native bf16 instructions."""
    if device_type == "cuda" and capability is not None:
        return ["fp32", "fp16"] + (["bf16"] if native_bf16(capability) else [])
    return ["fp32"] + (["bf16"] if cpu_bf16 else [])


def usr2_self_test(job_id: str | None, wait_s: float = USR2_WAIT_S) -> dict:
    """Send USR2 to this job the way SLURM's warning comes (all job steps, not the batch shell) and wait for it."""
    command = f"scancel --signal=USR2 {job_id}"
    if not job_id:
        return {"arrived": False, "command": None, "error": "not inside a SLURM job (no SLURM_JOB_ID)"}
    scancel = shutil.which("scancel")
    if scancel is None:
        return {"arrived": False, "command": command, "error": "scancel not found on this node"}
    seen: list[float] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(time.monotonic()))
    start = time.monotonic()
    try:
        proc = subprocess.run([scancel, "--signal=USR2", job_id], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            err = (proc.stderr.strip() or f"exit code {proc.returncode}").splitlines()[-1]
            return {"arrived": False, "command": command, "error": f"scancel failed: {err}"}
        while not seen and time.monotonic() - start < wait_s:
            time.sleep(0.05)  # the handler runs in this (main) thread between sleeps
    except (OSError, subprocess.SubprocessError) as exc:
        return {"arrived": False, "command": command, "error": f"cannot run scancel: {exc}"}
    finally:
        signal.signal(signal.SIGUSR2, previous)
    return {"arrived": bool(seen), "after_s": round(seen[0] - start, 3) if seen else None, "command": command,
            "waited_s": wait_s, "handler_before": getattr(previous, "__qualname__", repr(previous))}


def _bench_config(config_json: str, precision: str, note: list[str]) -> str:
    """The experiment in ``precision``; on a node without its dataset, the same-shaped digits stand in."""
    from ddpm_hpc import paths
    from ddpm_hpc.data import missing_files

    data = json.loads(config_json)
    data["train"]["precision"] = precision
    dataset, root = data["data"]["dataset"], data["data"].get("root")
    if dataset != "digits" and missing_files(dataset, Path(root).expanduser() if root else paths.data_root()):
        data["data"].update(dataset="digits", root=None)  # every dataset is 3 x 32 x 32 with 10 classes
        if not note:
            note.append(f"{dataset} is not on this node: timed on digits (same image size and classes)")
    return json.dumps(data)


def bench_precision(config_json: str, precision: str, steps: int, warmup: int, note: list[str]) -> dict:
    import torch

    from ddpm_hpc.config import experiment_from_json
    from ddpm_hpc.distributed import DistContext
    from ddpm_hpc.trainer import Run

    exp = experiment_from_json(_bench_config(config_json, precision, note))
    run = Run(exp, DistContext(), log_fn=lambda message: None)
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):  # kernel selection, lazy allocations, compilation
        run.train_step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        loss = run.train_step()
    sync()
    seconds = time.perf_counter() - start
    result = {"precision": precision, "device": str(run.device), "batch": exp.data.batch_size, "steps": steps,
              "seconds": round(seconds, 4), "img_per_s": round(exp.data.batch_size * steps / seconds, 1),
              "ms_per_step": round(1000 * seconds / steps, 2), "loss_finite": bool(torch.isfinite(loss).item())}
    del run
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


class DoctorProbe:
    """The submitit callable. Holds only the config (JSON), the storage roots and the answer file's path."""

    def __init__(self, config_json: str, roots: dict[str, str], answer: str, steps: int = 20, warmup: int = 3):
        self.config_json, self.roots, self.answer = config_json, dict(roots), answer
        self.steps, self.warmup = steps, warmup

    def __call__(self) -> str:
        os.environ.update(self.roots)
        job_id = os.environ.get("SLURM_JOB_ID")
        report: dict = {"complete": False, "started": registry.now(),
                        "host": os.uname().nodename, "job_id": job_id,
                        "partition": os.environ.get("SLURM_JOB_PARTITION")}
        # Each stage is on disk before it starts: a job killed during one tells the login side which (a USR2 that
        # kills the job instead of reaching Python, a GPU that hangs the benchmark).
        self._stage(report, "USR2 self-test")
        report["usr2"] = usr2_self_test(job_id)
        report["scontrol"] = shutil.which("scontrol")
        self._device_facts(report)
        self._stage(report, "benchmark")
        report["benchmark"] = self._benchmark()
        report.update(complete=True, stage=None, finished=registry.now())
        write_json(Path(self.answer), report)
        return self.answer

    def _stage(self, report: dict, stage: str) -> None:
        report["stage"] = stage
        write_json(Path(self.answer), report)

    def _device_facts(self, report: dict) -> None:
        try:
            from ddpm_hpc import devices

            report["torch"] = devices.torch_build()
            report["gpus"] = devices.gpu_report()
            report["allocated"] = devices.allocated_gpus()
        except Exception as exc:  # a broken CUDA install must not cost the other answers
            report["device_error"] = _error(exc)

    def _benchmark(self) -> dict:
        from ddpm_hpc import devices
        from ddpm_hpc.config import experiment_from_json
        from ddpm_hpc.distributed import DistContext
        from ddpm_hpc.fast_paths import cpu_has_bf16

        exp = experiment_from_json(self.config_json)
        out: dict = {"experiment": exp.name, "arch": exp.model.arch, "results": []}
        try:
            device = devices.resolve_device(exp.train.device, DistContext())  # refuses an unusable GPU
        except Exception as exc:
            out["error"] = _error(exc)
            return out
        capability = devices.device_capability(device.index or 0) if device.type == "cuda" else None
        note: list[str] = []
        for precision in precisions_to_bench(device.type, capability, cpu_has_bf16(), devices.native_bf16):
            try:
                out["results"].append(bench_precision(self.config_json, precision, self.steps, self.warmup, note))
            except Exception as exc:  # e.g. a precision this version of train.precision does not offer
                out["results"].append({"precision": precision, "error": _error(exc)})
        out["note"] = note[0] if note else None
        return out

