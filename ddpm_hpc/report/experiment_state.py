"""Gathering an experiment's state from what its runs left on disk, ``sacct`` and the last ``report.json`` snapshot."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

from .. import paths
from ..checkpoint import newest_file, recorded_hashes, step_of

SNAPSHOT = "report.json"
SACCT_TIMEOUT_S = 5
# A part-trained run is "in progress" while a job of it is alive, or (a run outside SLURM, with no jobs) while its
# metrics file was written lately; otherwise "stopped", or "failed" when its last training job failed.
SUBMITTED = "submitted_config.yaml"  # jobs/registry.py's snapshot of what make submit sent
FAILED_JOB_STATES = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
ACTIVE_JOB_STATES = {"SUBMITTED", "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                     "RESIZING", "SUSPENDED"}
QUIET_AFTER_S = 15 * 60


# Every reader tolerates missing or half-written files.
def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _read_metrics(path: Path) -> list[dict]:
    out = []
    for line in _read_lines(path):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if isinstance(record, dict) and "step" in record:
            out.append(record)
    return out


def _config(name: str) -> dict:
    """The config the run used (``config.json``, written by the trainer), else the one last submitted (a job that
    failed before it started training), else the YAML file as it is now."""
    folder = paths.experiment_dir(name)
    cfg = _read_json(folder / "config.json")
    if isinstance(cfg, dict):
        return cfg
    try:
        submitted = yaml.safe_load((folder / SUBMITTED).read_text())
        if isinstance(submitted, dict):
            return submitted
    except (OSError, ValueError, yaml.YAMLError):
        pass
    try:
        from ..config import load_experiment

        return load_experiment(name).to_dict()
    except Exception:  # noqa: BLE001 - no config at all is shown as such
        return {}


def _sacct_states(job_ids: list[str]) -> dict[str, str]:
    """Job states from SLURM accounting, when ``sacct`` is here (the cluster); {} otherwise."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=SACCT_TIMEOUT_S, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        job, _, state = line.partition("|")
        if job and state:
            states[job.strip()] = state.strip().split()[0]
    return states


EVENT_STATES = {"start": "RUNNING", "finished": "COMPLETED", "requeued": "REQUEUED", "stopped": "STOPPED",
                "failed": "FAILED"}


def _events(name: str) -> dict[str, dict]:
    """The last event per job id from ``logs/events.jsonl`` (appended by the jobs themselves)."""
    last: dict[str, dict] = {}
    for line in _read_lines(paths.experiment_dir(name) / "logs" / "events.jsonl"):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("job_id") is not None:
            last[str(event["job_id"])] = event
    return last


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _jobs(name: str, previous: dict, live_states: bool = True) -> list[dict]:
    """``jobs.json`` (written by ``jobs/`` at submission) with each job's state, from the best source here: sacct
    (on the cluster), the entry itself (state, cancelled_at), the job's own events, or the last snapshot."""
    raw = _read_json(paths.experiment_dir(name) / "jobs.json", [])
    if isinstance(raw, dict):
        raw = raw.get("jobs", [])
    jobs = [dict(j) for j in raw if isinstance(j, dict) and j.get("job_id") is not None] if isinstance(raw, list) \
        else []
    for j in jobs:
        j["job_id"] = str(j["job_id"])
        j["submitted"] = j.get("submitted") or j.get("submitted_at") or ""
    if live_states:
        live = _sacct_states([j["job_id"] for j in jobs])
    else:  # the index: what the experiment's own page saw in sacct, without asking again
        live = {str(j.get("job_id")): j.get("state") for j in previous.get("jobs", [])
                if isinstance(j, dict) and j.get("state_source") == "sacct"}
    events = _events(name)
    before = {str(j.get("job_id")): j.get("state") for j in previous.get("jobs", []) if isinstance(j, dict)}
    for j in jobs:
        base = j["job_id"].split("_")[0]
        state = live.get(j["job_id"]) or live.get(base)
        event = events.get(j["job_id"]) or events.get(base)
        if event and event.get("event") == "failed" and event.get("message"):
            j["message"] = str(event["message"])
        if state:
            j["state"], j["state_source"] = state, "sacct"
        elif j.get("state") or j.get("status"):
            j["state"], j["state_source"] = j.get("state") or j.get("status"), "jobs.json"
        elif j.get("cancelled_at"):
            j["state"], j["state_source"] = "CANCELLED", f"cancelled {j['cancelled_at']}"
        elif event and event.get("event") in EVENT_STATES:
            j["state"] = EVENT_STATES[event["event"]]
            j["state_source"] = f"job event {event.get('time', '')}".strip()
        elif before.get(j["job_id"]):
            j["state"], j["state_source"] = before[j["job_id"]], "last seen"
        else:
            j["state"], j["state_source"] = "unknown", "no sacct here, no events yet"
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
    folder = paths.experiment_dir(name) / "samples"
    out = []
    for meta in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        info = _read_json(meta)
        tag = meta.stem
        if not isinstance(info, dict) or not (folder / f"{tag}.png").is_file():
            continue
        out.append({"tag": tag, "info": info, "step": info.get("step", -1) if isinstance(info.get("step"), int)
                    else -1, "preview": bool(info.get("preview")) or tag.startswith("preview-"),
                    "mtime": (folder / f"{tag}.png").stat().st_mtime})
    return out


def _evals(name: str) -> list[tuple[str, object]]:
    folder = paths.experiment_dir(name) / "eval"
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        value = _read_json(path)
        if value is not None:
            out.append((path.name, value))
    return out


def format_time(t: float) -> str:
    """A local date and time as the pages show it."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def collect(name: str, live_states: bool = True) -> dict:
    """Everything the page shows, as plain JSON-able data (also written to ``report.json``)."""
    folder = paths.experiment_dir(name)
    previous = _read_json(folder / SNAPSHOT, {}) or {}
    cfg = _config(name)
    metrics = _read_metrics(folder / "metrics.jsonl")
    last = metrics[-1] if metrics else {}
    total = (cfg.get("train") or {}).get("steps")
    ckpt = _checkpoint(name, previous)
    done = last.get("step", 0)
    if ckpt and isinstance(ckpt.get("step"), int):
        done = max(done, ckpt["step"])
    try:
        updated = (folder / "metrics.jsonl").stat().st_mtime
    except OSError:
        updated = None
    jobs = _jobs(name, previous, live_states)
    states = {j.get("kind"): str(j["state"]).split(" ")[0] for j in jobs}  # each kind's newest job
    if total and done >= total:
        status = "finished"
    elif any(str(j["state"]).split(" ")[0] in ACTIVE_JOB_STATES for j in jobs if j.get("kind") == "train") or \
            (done and not jobs and updated and time.time() - updated < QUIET_AFTER_S):
        status = "in progress"
    elif states.get("train") in FAILED_JOB_STATES:
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
