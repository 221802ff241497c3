"""Gathering an experiment's state from what its runs left on disk, the job states ``jobs/`` decides (given as data,
see ``ddpm_hpc/job_states.py``) and the last ``report.json`` snapshot."""

from __future__ import annotations

import socket
import time

from .. import job_states, paths
from ..checkpoint import newest_file, recorded_hashes, step_of
from ..run_dir import RunDir, read_json

# A part-trained run is "in progress" while a job of it is alive, or (a run outside SLURM, with no jobs) while its
# metrics file was written lately; otherwise "stopped", or "failed" when its last training job failed.
QUIET_AFTER_S = 15 * 60


def _config(name: str) -> dict:
    """The config the run used (``config.json``, written by the trainer), else the one last submitted (a job that
    failed before it started training), else the YAML file as it is now."""
    run_dir = RunDir(name)
    cfg = run_dir.read_config()
    if cfg is None:
        cfg = run_dir.read_submitted_config()
    if cfg is not None:
        return cfg
    try:
        from ..config import load_experiment

        return load_experiment(name).to_dict()
    except Exception:  # noqa: BLE001 - no config at all is shown as such
        return {}


def _jobs(name: str, previous: dict, live_states: bool = True) -> list[dict]:
    """``jobs.json`` (written by ``jobs/`` at submission) with each job's state, as the registered job-state source
    decides it (``live_states=False``: without asking the scheduler again, e.g. for the index)."""
    jobs = [dict(j) for j in RunDir(name).read_jobs(bare_list=True) if j.get("job_id") is not None]
    for j in jobs:
        j["job_id"] = str(j["job_id"])
        j["submitted"] = j.get("submitted") or j.get("submitted_at") or ""
    job_states.current().decide(name, jobs, previous.get("jobs", []), live_states)
    return jobs


def _checkpoint(name: str, previous: dict) -> dict | None:
    """The newest checkpoint file here; else, as not on this machine, the one the last snapshot saw (a page pulled
    without CKPT=1)."""
    folder = paths.checkpoint_dir(name)
    path = newest_file(folder)
    if path is not None:
        info = {"file": path.name, "step": step_of(path), "sha256": recorded_hashes(folder).get(path.name),
                "folder": str(folder), "present": True}
        try:
            info["bytes"] = path.stat().st_size
            info["written"] = format_time(path.stat().st_mtime)
        except OSError:
            pass
        return info
    old = previous.get("checkpoint")
    if isinstance(old, dict):
        return {**old, "present": False, "as_of": old.get("as_of") or previous.get("rendered")}  # when last seen
    return None


def _samples(name: str) -> list[dict]:
    folder = RunDir(name).samples
    out = []
    for meta in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        info = read_json(meta)
        tag = meta.stem
        if not isinstance(info, dict) or not (folder / f"{tag}.png").is_file():
            continue
        out.append({"tag": tag, "info": info, "step": info.get("step", -1) if isinstance(info.get("step"), int)
                    else -1, "preview": bool(info.get("preview")) or tag.startswith("preview-"),
                    "mtime": (folder / f"{tag}.png").stat().st_mtime})
    return out


def _evals(name: str) -> list[tuple[str, object]]:
    folder = RunDir(name).eval
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        value = read_json(path)
        if value is not None:
            out.append((path.name, value))
    return out


def format_time(t: float) -> str:
    """A local date and time as the pages show it."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def collect(name: str, live_states: bool = True) -> dict:
    """Everything the page shows, as plain JSON-able data (also written to ``report.json``)."""
    run_dir = RunDir(name)
    previous = read_json(run_dir.report, {}) or {}
    cfg = _config(name)
    metrics = run_dir.read_metrics()
    last = metrics[-1] if metrics else {}
    total = (cfg.get("train") or {}).get("steps")
    ckpt = _checkpoint(name, previous)
    done = last.get("step", 0)
    if ckpt and isinstance(ckpt.get("step"), int):
        done = max(done, ckpt["step"])
    try:
        updated = run_dir.metrics.stat().st_mtime
    except OSError:
        updated = None
    jobs = _jobs(name, previous, live_states)
    meaning = job_states.current()
    states = {j.get("kind"): str(j["state"]).split(" ")[0] for j in jobs}  # each kind's newest job
    if total and done >= total:
        status = "finished"
    elif any(meaning.is_active(str(j["state"]).split(" ")[0]) for j in jobs if j.get("kind") == "train") or \
            (done and not jobs and updated and time.time() - updated < QUIET_AFTER_S):
        status = "in progress"
    elif "train" in states and meaning.is_failed(states["train"]):
        status = "failed"
    elif done:
        status = "stopped"  # part-trained, and nothing runs it now: the same command resumes it
    else:
        status = "not started"
    return {
        "experiment": name, "description": cfg.get("description", ""), "config": cfg, "status": status,
        "steps_done": done, "steps_total": total, "loss": last.get("loss"), "loss_smooth": last.get("loss_smooth"),
        "img_per_s": last.get("img_per_s"), "train_seconds": last.get("wall_seconds"),
        "metrics_updated": format_time(updated) if updated else None, "checkpoint": ckpt,
        "jobs": jobs,
        "samples": _samples(name), "evals": _evals(name),
        "rendered": format_time(time.time()), "rendered_on": socket.gethostname(),
    }


def experiment_names() -> list[str]:
    """Experiments with an output folder, plus those with only a YAML file (not run yet)."""
    root = paths.experiments_root()
    names = set()
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and not p.name.startswith((".", "_")) and p.name != "sweeps" and \
                    not (p / "sweep.json").is_file():  # experiments/sweeps/ and a sweep's folder are no experiments
                names.add(p.name)
            elif p.suffix == ".yaml" and not p.name.startswith((".", "_")):
                names.add(p.stem)
    return sorted(names)
