"""The eval-sweep block of an experiment's page: the frontier figure and the table of points (``eval/sweep-*.json``,
written by ``ddpm_hpc.metrics.eval_sweep``)."""

from __future__ import annotations

from pathlib import Path

from ..run_dir import EVAL
from .html_parts import _e, _src


def is_sweep(fname: str, value) -> bool:
    return fname.startswith("sweep-") and isinstance(value, dict) and isinstance(value.get("points"), list)


def _num(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else _e(value)


def _distance(row: dict, key: str) -> str:
    value, r = row.get(key), row.get(f"{key}_ratio")
    if value is None:
        return ""
    return _num(value) + (f" <b>({r:.2f}×)</b>" if r is not None else "")


def sweep_block(fname: str, table: dict, folder: Path) -> str:
    """Figure (when the PNG is there) + one row per point, the preset's default first-marked with ★."""
    plot = str(table.get("plot") or fname.replace(".json", ".png"))
    out = ""
    if (folder / EVAL / plot).is_file():
        src = _src(f"{EVAL}/{plot}", (folder / EVAL / plot).stat().st_mtime)
        out += (f'<figure><a href="{src}"><img src="{src}" alt="frontier {_e(fname)}" style="max-width:100%"></a>'
                f"<figcaption>conditional accuracy against each distance as a multiple of its real-data floor; "
                f"numbers: network evaluations per image; ★ the preset's default</figcaption></figure>")
    floor = table.get("floor") or {}
    out += (f'<p class="small muted">checkpoint step {_e(table.get("step"))} ({_e(table.get("weights"))} weights), '
            f'{_e(table.get("n"))} images per point on {_e(table.get("device"))}; '
            f'{"complete" if table.get("complete") else "incomplete (still running, or interrupted)"}. '
            f'{_e(floor.get("floor_note", ""))}</p>')
    head = ("<tr><th></th><th>settings</th><th>NFE / image</th><th>conditional accuracy</th>"
            "<th>classifier FD (× floor)</th><th>FID (× floor)</th><th>seconds</th></tr>")
    rows = ""
    for r in table["points"]:
        if not isinstance(r, dict):
            continue
        acc = r.get("conditional_accuracy")
        reused = " <span class='muted small'>(reused)</span>" if r.get("reused_from") else ""
        rows += (f"<tr><td>{'★' if r.get('default') else ''}</td><td><code>{_e(r.get('label', ''))}</code>{reused}</td>"
                 f"<td>{_num(r.get('nfe_per_image'))}</td><td>{'' if acc is None else f'{100 * acc:.1f} %'}</td>"
                 f"<td>{_distance(r, 'classifier_fd')}</td><td>{_distance(r, 'fid')}</td>"
                 f"<td>{_num(r.get('seconds'), 3)}</td></tr>")
    return out + f"<table>{head}{rows}</table>"
