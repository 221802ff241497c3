"""Static HTML reports that open from disk after ``make pull``: no server, no internet, relative links only.

``experiments/<exp>/index.html``: the config, the run's state (steps, last checkpoint, jobs, training time), the loss
curve, the forward-process figure, the sample grids by step with their metadata and any ``eval/*.json`` results.
``experiments/index.html``: one row per experiment.

Alongside each page, ``report.json`` keeps the state it was rendered from, so a page re-rendered on a laptop (where
``checkpoints/`` and ``sacct`` are usually absent) still shows the last checkpoint and job states seen on the cluster.
Nothing here imports torch; a failed refresh during training is logged and never stops the run.

The state is gathered in ``experiment_state``, turned into HTML in ``html``; the functions below write the pages.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from .. import paths
from ..checkpoint import atomic_write
from .experiment_state import SNAPSHOT, collect, experiment_names, format_time
from .html import PAGE, experiment_html, index_html, index_row

__all__ = ["PAGE", "SNAPSHOT", "collect", "experiment_html", "experiment_names", "refresh", "render",
           "render_experiment", "render_index"]


def _write(path: Path, text: str) -> None:
    """Atomic replace, so a browser (or rsync) never sees half a page, and no temporary file is left on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))


def render_experiment(name: str) -> Path:
    """Write ``experiments/<name>/index.html`` and ``report.json``; returns the page's path."""
    folder = paths.experiment_dir(name)
    d = collect(name)
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = {k: v for k, v in d.items() if k not in ("config",)}
    _write(folder / SNAPSHOT, json.dumps(snapshot, indent=1, default=str) + "\n")
    _write(folder / PAGE, experiment_html(d, folder))
    return folder / PAGE


def render_index() -> Path:
    """Write ``experiments/index.html`` listing every experiment."""
    root = paths.experiments_root()
    rows = ""
    for name in experiment_names():
        folder = root / name
        state = collect(name, live_states=False) if folder.is_dir() else None  # None: only a YAML file, not run
        rows += index_row(name, state, folder)
    from ..sweep_members import member_names, sweeps_with_records

    sweeps = {}
    for sweep in sweeps_with_records():
        try:
            sweeps[sweep] = len(member_names(sweep))
        except Exception:  # noqa: BLE001 - an unreadable sweep.json: the index is still written
            continue
    path = root / PAGE
    _write(path, index_html(root, rows, format_time(time.time()), socket.gethostname(), sweeps))
    return path


def render(target: str = "all") -> list[Path]:
    """``all``: every experiment's page, every sweep's comparison page and the index; a name: that page (a sweep's:
    its comparison page) and the index."""
    from ..sweep_members import sweeps_with_records, write_page

    if target in sweeps_with_records():
        page = write_page(target, print)
        return [*([page] if page else []), render_index()]
    names = experiment_names() if target == "all" else [paths.check_name(target)]
    if target != "all" and target not in experiment_names():
        from ..errors import UserError

        raise UserError(f"no experiment '{target}' in {paths.experiments_root()} (no output folder, no YAML file)")
    pages = [render_experiment(n) for n in names if target != "all" or paths.experiment_dir(n).is_dir()]
    if target == "all":  # after the members' own pages, which the comparison pages link to
        pages += [page for sweep in sweeps_with_records() if (page := write_page(sweep, print))]
    return [*pages, render_index()]


def refresh(name: str, log_fn=None) -> Path | None:
    """The hook after checkpoints and sampling: render ``name``'s page and the index, never raising."""
    try:
        page = render_experiment(name)
        render_index()
        return page
    except Exception as exc:  # noqa: BLE001 - a report is never worth a failed training or sampling job
        if log_fn:
            log_fn(f"warning: could not refresh the report of {name}: {type(exc).__name__}: {exc}")
        return None
