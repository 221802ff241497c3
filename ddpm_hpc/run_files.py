"""An experiment's files across runs: moving an earlier run aside before starting over, and the mark that lets a
batch job start over only once (rewinding the metrics of a resumed run: ``RunDir.rewind_metrics``). Nothing is ever
deleted."""

from __future__ import annotations

import time
from pathlib import Path

from . import paths
from .config import Experiment
from .run_dir import CONFIG, JOBS, LOGS, PAGE, REPORT, SUBMITTED_CONFIG, RunDir

# In experiments/<name>/: what the job submissions recorded (jobs/registry.py). It describes the submissions, not a
# run's results, and a running job still writes to logs/, so it stays when a run is moved aside.
SUBMISSION_RECORDS = (LOGS, JOBS, SUBMITTED_CONFIG)
# Rewritten by every run or report: moved with an old run, but on their own they are not one.
REGENERATED = (CONFIG, PAGE, REPORT)


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
    folder, out_dir = paths.checkpoint_dir(exp.name), RunDir(exp.name).path
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


# In checkpoints/<name>/ (RunDir.restart_mark): which request to start over (train.restart=true) this run's files
# answer. A batch job is re-run from the top by every requeue with the same config; this file lets it start over once
# per submission.
def restarted_under(exp_name: str, token: str | None) -> bool:
    """Whether the run on disk already started over for the restart request ``token`` (None: never, so every
    ``train.restart=true`` run on a workstation starts over)."""
    return token is not None and RunDir(exp_name).read_restart_token() == token


def mark_restart(exp_name: str, token: str) -> None:
    """Record that the run now in ``checkpoints/<name>/`` started over for ``token`` (moved aside with it later)."""
    RunDir(exp_name).write_restart_mark({"token": token, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
