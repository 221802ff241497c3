"""An experiment's folder, ``experiments/<name>/``: the name of every file and folder in it, and the one reader and
writer of its records (metrics, configs, jobs, events, the restart mark). Everyone else asks a ``RunDir`` rather than
typing a file name; samples, eval results and figures are written by what makes them, into the places named here.

What lies there, and who writes it:

- ``metrics.jsonl``: one JSON object per log interval (``step``, ``loss``, ``loss_smooth``, ``img_per_s``,
  ``wall_seconds``), appended by the trainer on rank 0; ``metrics.rewound.jsonl``: the lines moved out of it when a
  run resumed from a checkpoint older than its last line.
- ``config.json``: the config the run used (the trainer); ``submitted_config.yaml``: what ``make submit`` sent.
- ``jobs.json``: the job submissions (``jobs/registry.py`` keeps the records); ``logs/``: submitit's logs and
  ``logs/events.jsonl``, one line per job event, appended by the jobs themselves.
- ``samples/``, ``eval/``, ``tensorboard/``, ``loss.png``, ``forward_process.png``: what the runs produce.
- ``index.html`` and ``report.json``: the report page and the state it was rendered from.

The restart mark (``restart.json``, see ``run_files``) lies in the checkpoint folder, ``checkpoints/<name>/``.

Every reader tolerates a missing file and a torn last line: a job may be writing the file right now, or was killed
while it did. Nothing here knows SLURM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from . import paths
from .safe_write import atomic_write

METRICS = "metrics.jsonl"
REWOUND = "metrics.rewound.jsonl"
CONFIG = "config.json"
SUBMITTED_CONFIG = "submitted_config.yaml"
JOBS = "jobs.json"
LOGS = "logs"
EVENTS = "events.jsonl"  # in logs/
SAMPLES = "samples"
EVAL = "eval"
TENSORBOARD = "tensorboard"
LOSS_PLOT = "loss.png"
FORWARD_FIGURE = "forward_process.png"
PAGE = "index.html"
REPORT = "report.json"
RESTART_MARK = "restart.json"  # in checkpoints/<name>/


def read_json(path: Path, default=None):
    """The JSON value in ``path``, or ``default`` when it is missing or not (yet) whole."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _records(lines) -> list[dict]:
    """The metrics records among ``lines``: JSON objects with a step (a torn line, or a fragment of one where a file
    was read from the middle, is skipped)."""
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            out.append(record)
    return out


def names_with_jobs() -> list[str]:
    """The experiments with a ``jobs.json``, i.e. submitted at least once."""
    return sorted(p.parent.name for p in paths.experiments_root().glob(f"*/{JOBS}"))


class RunDir:
    """``experiments/<name>/`` of one experiment (the name is checked: it cannot escape ``experiments/``)."""

    def __init__(self, name: str):
        self.name = name
        self.path = paths.experiment_dir(name)

    # -- where each thing lies ------------------------------------------------------------------------------------
    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def rewound(self) -> Path:
        return self.path / REWOUND

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def submitted_config(self) -> Path:
        return self.path / SUBMITTED_CONFIG

    @property
    def jobs(self) -> Path:
        return self.path / JOBS

    @property
    def logs(self) -> Path:
        """submitit's folder for this experiment: ``<jobid>_<rank>_log.out|err``, ``<jobid>_submitted.pkl``, ..."""
        return self.path / LOGS

    @property
    def events(self) -> Path:
        return self.logs / EVENTS

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def eval(self) -> Path:
        return self.path / EVAL

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def loss_plot(self) -> Path:
        return self.path / LOSS_PLOT

    @property
    def forward_figure(self) -> Path:
        return self.path / FORWARD_FIGURE

    @property
    def page(self) -> Path:
        return self.path / PAGE

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def restart_mark(self) -> Path:
        return paths.checkpoint_dir(self.name) / RESTART_MARK

    # -- metrics.jsonl --------------------------------------------------------------------------------------------
    def read_metrics(self, tail_bytes: int | None = None) -> list[dict]:
        """The metrics records, oldest first; with ``tail_bytes``, only those in the file's last bytes (a quick look
        at a long run's end)."""
        try:
            with open(self.metrics, "rb") as f:
                if tail_bytes is not None:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - tail_bytes))
                return _records(f.read().decode(errors="replace").splitlines())
        except OSError:
            return []

    def metrics_after(self, offset: int) -> tuple[list[dict], int]:
        """The records of the whole lines written after byte ``offset``, and the offset after them (a line still
        being written is left for the next call)."""
        try:
            size = self.metrics.stat().st_size
        except OSError:
            return [], offset
        if size <= offset:
            return [], offset
        with open(self.metrics, "rb") as f:
            f.seek(offset)
            chunk = f.read(size - offset)
        complete = chunk[: chunk.rfind(b"\n") + 1]
        return _records(complete.splitlines()), offset + len(complete)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def rewind_metrics(self, step: int) -> int:
        """Resuming from ``step``: lines logged after it (they will be logged again, identically) and lines cut short
        by a kill move from ``metrics.jsonl`` to the end of ``metrics.rewound.jsonl``. Returns how many lines moved."""
        metrics = self.metrics
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
        with open(self.rewound, "a") as f:  # first: a kill in between duplicates lines, never loses one
            f.writelines(ln + "\n" for ln, k in zip(lines, keep) if not k)
            f.flush()
            os.fsync(f.fileno())
        atomic_write(metrics, "".join(ln + "\n" for ln, k in zip(lines, keep) if k).encode())
        return keep.count(False)

    # -- the configs ----------------------------------------------------------------------------------------------
    def read_config(self) -> dict | None:
        """``config.json``, the config the run used; None when there is none (yet)."""
        cfg = read_json(self.config)
        return cfg if isinstance(cfg, dict) else None

    def write_config(self, cfg: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(cfg, indent=1) + "\n")

    def read_submitted_config(self) -> dict | None:
        """``submitted_config.yaml``, what the last ``make submit`` sent; None when there is none."""
        try:
            submitted = yaml.safe_load(self.submitted_config.read_text())
        except (OSError, ValueError, yaml.YAMLError):
            return None
        return submitted if isinstance(submitted, dict) else None

    def write_submitted_config(self, text: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.submitted_config, text.encode())
        return self.submitted_config

    # -- jobs.json and logs/events.jsonl ------------------------------------------------------------------------
    def read_jobs(self, bare_list: bool = False) -> list[dict]:
        """The entries of ``jobs.json`` (``{"experiment", "jobs": [...]}``) that name a ``job_id``. ``bare_list``: a
        file holding only the list is read as well (the report has always accepted one; ``make status`` not)."""
        data = read_json(self.jobs)
        if isinstance(data, dict):
            data = data.get("jobs")
        elif not (bare_list and isinstance(data, list)):
            data = None
        return [j for j in data or [] if isinstance(j, dict) and "job_id" in j] if isinstance(data, list) else []

    def write_jobs(self, jobs: list[dict]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.jobs, (json.dumps({"experiment": self.name, "jobs": jobs}, indent=1) + "\n").encode())

    def append_event(self, event: dict) -> None:
        """Append one event line (a single ``write`` on an O_APPEND file: lines from requeued runs never
        interleave)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(event) + "\n").encode())
        finally:
            os.close(fd)

    def read_events(self) -> list[dict]:
        """The events in the order written (torn lines skipped)."""
        try:
            lines = self.events.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    # -- the restart mark (in checkpoints/<name>/) ----------------------------------------------------------------
    def read_restart_token(self) -> str | None:
        """The restart request (token) the run in ``checkpoints/<name>/`` started over for, if it records one."""
        try:
            return json.loads(self.restart_mark.read_text()).get("token")
        except (OSError, ValueError, AttributeError):
            return None

    def write_restart_mark(self, record: dict) -> None:
        self.restart_mark.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.restart_mark, (json.dumps(record) + "\n").encode())
