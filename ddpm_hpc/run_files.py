"""An experiment's files across runs: moving an earlier run aside before starting over, and rewinding the metrics
when a run resumes from a checkpoint older than its last log line. Nothing is ever deleted."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from . import checkpoint, paths
from .config import Experiment

# In experiments/<name>/: what the job submissions recorded (jobs/registry.py). It describes the submissions, not a
# run's results, and a running job still writes to logs/, so it stays when a run is moved aside.
SUBMISSION_RECORDS = ("logs", "jobs.json", "submitted_config.yaml")
# Rewritten by every run or report: moved with an old run, but on their own they are not one.
REGENERATED = ("config.json", "index.html", "report.json")
REWOUND = "metrics.rewound.jsonl"


def _old_outputs(out_dir: Path) -> list[Path]:
    """What an earlier run left in ``experiments/<name>/``: all but the submission records, temporary files (a
    report may be writing one) and earlier archives (``old-*``, and the older ``metrics.old-*.jsonl``)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if p.name not in SUBMISSION_RECORDS
                  and not p.name.startswith((".", "old-", "metrics.old-")))


def archive_previous_run(exp: Experiment) -> list[Path]:
    """Before a run starts from step 0: move whatever an earlier run left aside, never deleting anything. The
    checkpoint folder becomes ``checkpoints/<name>.old-<time>``, the outputs (metrics, plots, samples, eval, report)
    move to ``experiments/<name>/old-<time>/``. Returns the new locations (none if there was no earlier run)."""
    folder, out_dir = paths.checkpoint_dir(exp.name), paths.experiment_dir(exp.name)
    outputs = _old_outputs(out_dir)
    ckpts = folder.is_dir() and any(folder.iterdir())
    if not ckpts and all(p.name in REGENERATED for p in outputs):
        return []
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    while folder.with_name(f"{folder.name}.old-{stamp}{n or ''}").exists() or \
            (out_dir / f"old-{stamp}{n or ''}").exists():
        n += 1  # started over twice within a second: never rename onto (and lose) an earlier archive
    stamp = f"{stamp}{n or ''}"
    moved = []
    if ckpts:
        moved.append(folder.rename(folder.with_name(f"{folder.name}.old-{stamp}")))
    if outputs:
        (out_dir / f"old-{stamp}").mkdir()
        for path in outputs:
            path.rename(out_dir / f"old-{stamp}" / path.name)
        moved.append(out_dir / f"old-{stamp}")
    return moved


# In checkpoints/<name>/: which request to start over (train.restart=true) this run's files answer. A batch job is
# re-run from the top by every requeue with the same config; this file lets it start over once per submission.
RESTART_MARK = "restart.json"


def restarted_under(exp_name: str, token: str | None) -> bool:
    """Whether the run on disk already started over for the restart request ``token`` (None: never, so every
    ``train.restart=true`` run on a workstation starts over)."""
    if token is None:
        return False
    try:
        return json.loads((paths.checkpoint_dir(exp_name) / RESTART_MARK).read_text()).get("token") == token
    except (OSError, ValueError, AttributeError):
        return False


def mark_restart(exp_name: str, token: str) -> None:
    """Record that the run now in ``checkpoints/<name>/`` started over for ``token`` (moved aside with it later)."""
    folder = paths.checkpoint_dir(exp_name)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"token": token, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    checkpoint.atomic_write(folder / RESTART_MARK, (json.dumps(record) + "\n").encode())


def rewind_metrics(metrics: Path, step: int) -> int:
    """Resuming from ``step``: lines logged after it (they will be logged again, identically) and lines cut short by
    a kill move from ``metrics.jsonl`` to the end of ``metrics.rewound.jsonl``. Returns how many lines moved."""
    if not metrics.is_file():
        return 0

    def kept(line: str) -> bool:
        try:
            return json.loads(line)["step"] <= step
        except (ValueError, TypeError, KeyError):  # e.g. a line cut short when the process was killed mid-write
            return False

    lines = [ln for ln in metrics.read_text(errors="replace").splitlines() if ln.strip()]
    keep = [kept(ln) for ln in lines]
    if all(keep):
        return 0
    with open(metrics.with_name(REWOUND), "a") as f:  # first: a kill in between duplicates lines, never loses one
        f.writelines(ln + "\n" for ln, k in zip(lines, keep) if not k)
        f.flush()
        os.fsync(f.fileno())
    checkpoint.atomic_write(metrics, "".join(ln + "\n" for ln, k in zip(lines, keep) if k).encode())
    return keep.count(False)
