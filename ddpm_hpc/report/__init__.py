"""Static HTML reports that open from disk after ``make pull``: no server, no internet, relative links only.

``experiments/<exp>/index.html``: the config, the run's state (steps, last checkpoint, jobs, training time), the loss
curve, the forward-process figure, the sample grids by step with their metadata and any ``eval/*.json`` results.
``experiments/index.html``: one row per experiment, then the comparison pages (``compare``: a sweep's page, or
``ddpm-hpc compare A B C``).

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
from ..run_dir import REPORT as SNAPSHOT
from ..run_dir import RunDir
from ..safe_write import atomic_write
from .compare import comparison_folders, is_comparison, refresh_comparison
from .experiment_state import collect, experiment_names, format_time
from .html import PAGE, experiment_html, index_html, index_row
from .compare_html import comparison_row

__all__ = ["PAGE", "SNAPSHOT", "collect", "experiment_html", "experiment_names", "refresh", "render",
           "render_experiment", "render_index"]


def _write(path: Path, text: str) -> None:
    """Atomic replace, so a browser (or rsync) never sees half a page, and no temporary file is left on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))


def render_experiment(name: str) -> Path:
    """Write ``experiments/<name>/index.html`` and ``report.json``; returns the page's path."""
    run_dir = RunDir(name)
    d = collect(name)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    snapshot = {k: v for k, v in d.items() if k not in ("config",)}
    _write(run_dir.report, json.dumps(snapshot, indent=1, default=str) + "\n")
    _write(run_dir.page, experiment_html(d, run_dir.path))
    return run_dir.page


def _holds_comparison(folder: Path) -> bool:
    """A sweep's folder (its ``sweep.json``, even before its first page) or any other comparison page's."""
    from ..sweep_members import is_sweep_folder

    return is_comparison(folder) or is_sweep_folder(folder)


def _render_comparison(folder: Path) -> Path | None:
    """A sweep's page from its member list (members may have been added since), others from their request."""
    from ..sweep_members import is_sweep_folder, write_page

    return write_page(folder.name, print) if is_sweep_folder(folder) else refresh_comparison(folder)


def render_index() -> Path:
    """Write ``experiments/index.html`` listing every experiment, then every comparison page (sweeps and
    ``ddpm-hpc compare``)."""
    root = paths.experiments_root()
    rows = ""
    for name in experiment_names():
        folder = root / name
        if _holds_comparison(folder):
            continue
        state = collect(name, live_states=False) if folder.is_dir() else None  # None: only a YAML file, not run
        rows += index_row(name, state, folder)
    comparisons = "".join(comparison_row(folder, root) for folder in comparison_folders())
    path = root / PAGE
    _write(path, index_html(root, rows, format_time(time.time()), socket.gethostname(), comparisons))
    return path


def render(target: str = "all") -> list[Path]:
    """``all``: every experiment's page, every comparison page (sweeps and ``ddpm-hpc compare``) and the index; a
    name: that page (a sweep's: its comparison page) and the index."""
    from ..sweep_members import sweeps_with_records

    if target != "all":
        folder = paths.experiment_dir(paths.check_name(target))
        if _holds_comparison(folder):
            page = _render_comparison(folder)
            return [*([page] if page else []), render_index()]
        if target not in experiment_names():
            from ..errors import UserError

            raise UserError(f"no experiment '{target}' in {paths.experiments_root()} (no output folder, no YAML file)")
        return [render_experiment(target), render_index()]
    pages = [render_experiment(n) for n in experiment_names()
             if paths.experiment_dir(n).is_dir() and not _holds_comparison(paths.experiment_dir(n))]
    # after the experiments' own pages, which the comparison pages link to
    folders = {*comparison_folders(), *(paths.experiment_dir(s) for s in sweeps_with_records())}
    pages += [_render_comparison(f) for f in sorted(folders)]
    return [*(page for page in pages if page), render_index()]


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
