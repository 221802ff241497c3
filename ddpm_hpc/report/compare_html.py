"""HTML of the comparison page (``compare.write_comparison``), built from html.py's helpers and page layout."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .experiment_state import format_time
from .html import _badge, _duration, _e, _img, _page, _src

# --metric: (label, lower is better). "loss" is the final smoothed training loss; the eval metrics come from each
# member's eval/*.json.
METRICS = {
    "fid": ("FID", True),
    "classifier_fd": ("classifier FD", True),
    "accuracy": ("conditional accuracy", False),
    "loss": ("final smoothed loss", True),
    "img_per_s": ("throughput (img/s)", False),
    "compute_hours": ("compute hours", True),
}

# Sorting by a click on a header: rows reorder by each cell's data-v (numbers numerically, empty cells last); a
# second click reverses. Without JavaScript the table simply stays in the order the members were given.
SORT_SCRIPT = """
(function () {
  var table = document.getElementById('members');
  if (!table) { return; }
  var heads = table.tHead.rows[0].cells, body = table.tBodies[0];
  function value(row, i, numeric) {
    var v = row.cells[i].getAttribute('data-v');
    if (v === null || v === '') { return null; }
    return numeric ? parseFloat(v) : v;
  }
  function sortBy(i) {
    var th = heads[i], numeric = th.getAttribute('data-type') === 'num';
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    for (var k = 0; k < heads.length; k++) { heads[k].removeAttribute('aria-sort'); }
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, i, numeric), y = value(b, i, numeric);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var c = numeric ? x - y : String(x).localeCompare(String(y), undefined, {numeric: true});
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  for (var i = 0; i < heads.length; i++) {
    heads[i].addEventListener('click', sortBy.bind(null, i));
    heads[i].title = 'click to sort';
  }
  document.body.setAttribute('data-sortable', 'yes');
})();
"""
STYLE = """<style>#members th{cursor:pointer;white-space:nowrap}
#members th[aria-sort=ascending]::after{content:" \\25B2"}
#members th[aria-sort=descending]::after{content:" \\25BC"}tr.best td{background:#ecfdf3}.num{text-align:right}
.star{color:#d97706}</style>"""


def _num(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _cell(text: str, sort_value, cls: str = "") -> str:
    v = "" if sort_value is None else sort_value
    return f'<td data-v="{_e(v)}"{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{text}</td>'


def _member_link(m: dict, out_dir: Path) -> str:
    if not Path(m["page"]).is_file():
        return _e(m["name"])
    rel = os.path.relpath(m["page"], out_dir).replace(os.sep, "/")
    return f'<a href="{_src(rel)}">{_e(m["name"])}</a>'


def _table(members, varied, metric, best, out_dir: Path) -> str:
    keys = list(dict.fromkeys(k for m in members for k in varied.get(m["name"], {})))
    evals = [k for k in ("accuracy", "classifier_fd", "fid") if any(m["values"][k] is not None for m in members)]
    heads = [("member", "text")] + [(k, "text") for k in keys] + [("state", "text"), ("step", "num"),
                                                                  ("final smoothed loss", "num")]
    heads += [(METRICS[k][0], "num") for k in evals] + [("img/s", "num"), ("compute", "num")]
    head = "".join(f'<th data-type="{t}" data-key="{_e(k)}">{_e(k)}</th>' for k, t in heads)
    rows = ""
    for m in members:
        vals, is_best = m["values"], m["name"] == best
        star = ' <span class="star" title="best by the chosen metric">★ best</span>' if is_best else ""
        cells = _cell(_member_link(m, out_dir) + star, m["name"])
        cells += "".join(_cell(_e(varied.get(m["name"], {}).get(k, "")), varied.get(m["name"], {}).get(k, ""))
                         for k in keys)
        cells += _cell(_badge(m["state"]), m["state"])
        total = f" / {_e(m['steps_total'])}" if m["steps_total"] else ""
        cells += _cell(f"{_e(m['steps_done'])}{total}", m["steps_done"], "num")
        cells += _cell(_num(vals["loss"]), vals["loss"], "num")
        for k in evals:
            text = _num(vals[k])
            if text and m["eval_file"]:
                text = f'<span title="{_e(m["eval_file"])}">{text}</span>'
            cells += _cell(text, vals[k], "num")
        cells += _cell(_num(vals["img_per_s"], 3), vals["img_per_s"], "num")
        hours = vals["compute_hours"]
        compute = "" if hours is None else (f'{hours:.3g} <span class="muted small">{_e(m["compute_unit"])}, '
                                            f'{_duration(m["train_seconds"])} of training</span>')
        cells += _cell(compute, hours, "num")
        rows += f'<tr data-name="{_e(m["name"])}"{" class=best" if is_best else ""}>{cells}</tr>'
    return f'<table id="members"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _notes(members, metric, best) -> str:
    label, lower = METRICS[metric]
    unranked = [m["name"] for m in members if m["values"][metric] is None]
    text = f"<b>Best by {_e(label)}</b> ({'lower' if lower else 'higher'} is better; " \
           f"<code>--metric {_e(metric)}</code>): " + (f"<b>{_e(best)}</b>" if best else "no member has it yet")
    if unranked and best:
        text += f". Not ranked (no value): {_e(', '.join(unranked))}"
    out = f"<p>{text}.</p>"
    objectives = {str((m["config"].get("diffusion") or {}).get("objective")) for m in members if m["config"]}
    if metric == "loss" and len(objectives) > 1:
        out += f'<p class="missing small">The members train different objectives ' \
               f"({_e(', '.join(sorted(objectives)))}): their losses measure different things; rank them by an " \
               f"eval metric instead.</p>"
    settings = {tuple(sorted((k, str(v)) for k, v in m["eval_settings"].items())) for m in members if m["eval_file"]}
    if len(settings) > 1:
        differ = sorted({k for s in settings for k, v in s} - {k for k, _ in set.intersection(*map(set, settings))})
        out += f'<p class="missing small">The members\' newest evals differ in {_e(", ".join(differ))}: their ' \
               f"metrics do not compare like with like (hover a value for its eval file).</p>"
    out += '<p class="muted small">Eval metrics: each member\'s newest <code>eval/*.json</code> (latest step). ' \
           "Throughput: the last logged interval. Compute: training time (all restarts, queueing excluded) times " \
           "the GPUs of the config's slurm section for SLURM runs; for local runs, hours of one process.</p>"
    return out


def _grids(members, step, picks, grids, varied, out_dir: Path) -> str:
    if not picks:
        return '<h2>Samples</h2><p class="muted">No sample grids yet.</p>'
    where = f"at step {_e(step)}, the newest step every member with grids has" if step is not None else \
        "each member's newest (the members have no step in common)"
    figs = ""
    for m in members:
        name = m["name"]
        label = ", ".join(f"{k}={v}" for k, v in varied.get(name, {}).items())
        if name not in picks:
            figs += f'<figure><figcaption><b>{_e(name)}</b><br><span class="muted">no grid yet</span>' \
                    f"</figcaption></figure>"
            continue
        tag = picks[name]["tag"]
        image = _img(grids[name], out_dir, f"{name} {tag}", min_width=160, max_width=360) if name in grids else \
            f'<span class="missing">grid {_e(tag)} missing</span>'
        figs += f"<figure>{image}<figcaption><b>{_e(name)}</b><br>{_e(label)}<br>" \
                f'<span class="muted small">{_e(tag)}</span></figcaption></figure>'
    return f"<h2>Samples {where}</h2><div class='grid'>{figs}</div>"


def comparison_html(title, members, varied, metric, best, step, picks, grids, plot, out_dir: Path) -> str:
    body = f'<h1>{_e(title)}</h1><p class="muted">{len(members)} experiments. Click a column header to sort.</p>'
    body += _notes(members, metric, best) + _table(members, varied, metric, best, out_dir)
    body += "<h2>Loss curves</h2>"
    if plot:
        body += f"<figure>{_img(plot, out_dir, 'loss curves', max_width=1100)}<figcaption>smoothed training loss " \
                f"of every member (log scale); the best member's line is thicker</figcaption></figure>"
    else:
        body += '<p class="muted">No member has logged a loss yet.</p>'
    body += _grids(members, step, picks, grids, varied, out_dir)
    body += f'<p class="muted small">Rendered {_e(format_time(time.time()))}. The numbers: ' \
            f'<a href="comparison.json">comparison.json</a>.</p>'
    return _page(f"{title} — ddpm-hpc", STYLE + body + f"<script>{SORT_SCRIPT}</script>")
