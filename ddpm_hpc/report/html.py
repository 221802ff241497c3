"""HTML for the report pages from ``experiment_state.collect``'s data: the sections and the pages (their building
blocks, CSS and script: html_parts.py)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from .. import job_states
from ..logging_utils import format_seconds
from ..run_dir import CONFIG, EVAL, FORWARD_FIGURE, JOBS, LOGS, LOSS_PLOT, METRICS, PAGE, REPORT, SAMPLES, TENSORBOARD
from .html_parts import _badge, _e, _figure, _flatten, _fmt, _img, _kv_table, _page, _progress, _src
from .sweep_html import is_sweep, sweep_block

MAX_PREVIEWS = 12  # newest preview grids shown; the rest stay in samples/


def _job_badge(state: str) -> str:
    return f'<span class="badge {job_states.current().badge(state)}">{_e(state)}</span>'


def _state_section(d: dict) -> str:
    html_rows = [f"<tr><td>status</td><td>{_badge(d['status'])}</td></tr>",
                 f"<tr><td>steps</td><td>{_progress(d['steps_done'], d['steps_total'])}</td></tr>"]
    simple = []
    if d.get("loss_smooth") is not None:
        simple.append(("loss (smoothed / last interval)", f"{d['loss_smooth']:.5g} / {d['loss']:.5g}"))
    if d.get("train_seconds") is not None:
        simple.append(("training time (all restarts)", format_seconds(d["train_seconds"])))
    if d.get("img_per_s") is not None:
        simple.append(("throughput (last interval)", f"{d['img_per_s']:.0f} img/s"))
    if d.get("metrics_updated"):
        simple.append(("metrics last written", d["metrics_updated"]))
    ck = d.get("checkpoint")
    if ck:
        where = f"{ck.get('folder', 'checkpoints')}/{ck['file']}"
        text = f"step {ck.get('step')} — {where}"
        if ck.get("bytes"):
            text += f" ({ck['bytes'] / 2**20:.1f} MiB, written {ck.get('written')})"
        if not ck.get("present"):
            text += f" — not on this machine{' (as of ' + ck['as_of'] + ')' if ck.get('as_of') else ''}; " \
                    f"make pull EXP={d['experiment']} CKPT=1 copies it"
        simple.append(("last checkpoint", text))
        if ck.get("sha256"):
            simple.append(("checkpoint SHA-256", ck["sha256"]))
    else:
        simple.append(("last checkpoint", "none yet"))
    html_rows += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in simple]
    out = f'<h2>Run state</h2><table class="kv">{"".join(html_rows)}</table>'
    if d["jobs"]:
        rows = "".join(
            f"<tr><td>{_e(j.get('kind', ''))}</td><td><code>{_e(j['job_id'])}</code></td>"
            f"<td>{_job_badge(j['state'])} <span class='muted small'>{_e(j['state_source'])}</span>"
            + (f"<div class='small missing'>{_e(j['message'])}</div>" if j.get("message") else "") + "</td>"
            f"<td>{_e(j.get('submitted', ''))}</td><td class='small'>{_e(' '.join(map(str, j.get('overrides') or [])))}"
            f"</td></tr>" for j in reversed(d["jobs"]))
        out += "<h3>SLURM jobs</h3><table><tr><th>kind</th><th>job id</th><th>state</th><th>submitted</th>" \
               f"<th>overrides</th></tr>{rows}</table>"
    else:
        out += '<p class="muted small">No SLURM jobs recorded (jobs.json absent): trained locally or not submitted.</p>'
    return out


SAMPLE_KEYS = ("sampler", "steps", "nfe_per_image", "guidance", "eta", "seed", "weights", "images", "wall_seconds",
               "device", "created")


def _sample_figure(s: dict, folder: Path) -> str:
    tag, info = s["tag"], s["info"]
    caption = f"<b>{_e(tag)}</b>"
    links = [f'<a href="{_src(f"{SAMPLES}/{tag}{ext}")}">{ext[1:]}</a>' for ext in (".json", ".safetensors")
             if (folder / SAMPLES / f"{tag}{ext}").is_file()]
    caption += f' <span class="small">({" · ".join(links)})</span>' if links else ""
    shown = [(k, info[k]) for k in SAMPLE_KEYS if k in info]
    rest = [(k, v) for k, v in info.items() if k not in SAMPLE_KEYS and k not in ("experiment", "step", "trajectory")]
    caption += _kv_table(shown)
    if rest:
        caption += f"<details><summary>all metadata</summary>{_kv_table(rest)}</details>"
    traj, extra = info.get("trajectory"), ""
    if isinstance(traj, str) and (folder / SAMPLES / traj).is_file():
        rel = f"{SAMPLES}/{traj}"
        extra = (f'<div class="small muted">denoising trajectory x<sub>T</sub> … x<sub>0</sub> (rows: samples)</div>'
                 f'<a href="{_src(rel)}">{_img(rel, folder, f"trajectory {tag}")}</a>')
    return _figure(f"{SAMPLES}/{tag}.png", folder, caption, f"samples {tag}", extra)


def _samples_section(d: dict, folder: Path) -> str:
    finals = [s for s in d["samples"] if not s["preview"]]
    previews = [s for s in d["samples"] if s["preview"]]
    out = "<h2>Sample grids</h2>"
    if not finals:
        out += f'<p class="muted">No sample grids yet: <code>ddpm-hpc sample {_e(d["experiment"])}</code> ' \
               f"(or the sampling job) writes them.</p>"
    for step in sorted({s["step"] for s in finals}, reverse=True):
        group = sorted((s for s in finals if s["step"] == step), key=lambda s: s["tag"])
        out += f"<h3>step {_e(step)}</h3><div class='grid'>" + "".join(_sample_figure(s, folder) for s in group) \
               + "</div>"
    if previews:
        previews.sort(key=lambda s: s["step"], reverse=True)
        more = len(previews) - MAX_PREVIEWS
        previews = previews[:MAX_PREVIEWS]
        figs = "".join(_figure(f"{SAMPLES}/{s['tag']}.png", folder,
                               f"step {_e(s['step'])} · {_e(s['info'].get('sampler', ''))} "
                               f"{_e(s['info'].get('steps', ''))} steps", f"preview {s['tag']}", min_width=140)
                       for s in previews)
        out += f"<h3>Previews during training (newest first)</h3><div class='grid'>{figs}</div>"
        if more > 0:
            out += f'<p class="muted small">{more} older previews in <a href="samples/">samples/</a>.</p>'
    return out


def _evals_section(d: dict, folder: Path) -> str:
    if not d["evals"]:
        return ""
    out = "<h2>Evaluation</h2>"
    for fname, value in d["evals"]:
        out += f'<h3><a href="{_src(f"{EVAL}/{fname}")}">{_e(fname)}</a></h3>'
        if is_sweep(fname, value):
            out += sweep_block(fname, value, folder)
        elif isinstance(value, dict):
            out += _kv_table(_flatten(value))
        elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            keys = list(dict.fromkeys(k for r in value for k in r))
            head = "".join(f"<th>{_e(k)}</th>" for k in keys)
            rows = "".join("<tr>" + "".join(f"<td>{_e(_fmt(r.get(k, '')))}</td>" for k in keys) + "</tr>"
                           for r in value)
            out += f"<table><tr>{head}</tr>{rows}</table>"
        else:
            out += f"<pre>{_e(json.dumps(value, indent=1))}</pre>"
    return out


def _config_section(cfg: dict) -> str:
    if not cfg:
        return '<h2>Config</h2><p class="muted">No config.json yet.</p>'
    cells = ""
    for section, values in cfg.items():
        if isinstance(values, dict):
            cells += f"<div><h3>{_e(section)}</h3>{_kv_table(values.items())}</div>"
    return f"<h2>Config</h2><div class='grid'>{cells}</div>" \
           f"<details><summary>config.json</summary><pre>{_e(json.dumps(cfg, indent=1))}</pre></details>"


def experiment_html(d: dict, folder: Path) -> str:
    """``experiments/<name>/index.html`` from ``collect``'s data ``d``; ``folder`` is the experiment's output folder."""
    name = d["experiment"]
    body = (f'<p class="small"><a href="../{PAGE}">← all experiments</a></p><h1>{_e(name)}</h1>'
            f'<p class="muted">{_e(d["description"])}</p>')
    body += _state_section(d)
    figs = _figure(LOSS_PLOT, folder, "training loss (log scale): mean per log interval and smoothed", "loss curve")
    figs += _figure(FORWARD_FIGURE, folder, "forward process: x<sub>0</sub>, x<sub>t</sub>, the noise, and "
                    "the network's prediction of it", "forward process")
    body += "<h2>Training</h2>" + (f"<div class='grid'>{figs}</div>" if figs else
                                   '<p class="muted">No plots yet (loss.png is written at the first checkpoint).</p>')
    body += _samples_section(d, folder)
    body += _evals_section(d, folder)
    body += _config_section(d["config"])
    files = [f for f in (METRICS, CONFIG, JOBS, REPORT) if (folder / f).is_file()]
    files += [f"{sub}/" for sub in (LOGS, SAMPLES, EVAL, TENSORBOARD) if (folder / sub).is_dir()]
    if files:
        body += "<h2>Files</h2><p>" + " · ".join(f'<a href="{_src(f)}">{_e(f)}</a>' for f in files) + "</p>"
    body += f'<p class="muted small">Rendered {_e(d["rendered"])} on {_e(d["rendered_on"])} by ' \
            f"<code>ddpm-hpc report {_e(name)}</code>.</p>"
    return _page(f"{name} — ddpm-hpc", body)


def index_row(name: str, d: dict | None, folder: Path) -> str:
    """One experiment's row in ``experiments/index.html``; ``d`` is None for an experiment that has not run."""
    if d is None:
        return (f"<tr><td>{_e(name)}</td><td><span class='badge stop'>not run</span></td><td></td><td></td>"
                f"<td></td><td></td></tr>")
    page = f"{quote(name)}/{PAGE}"
    link = f'<a href="{_e(page)}">{_e(name)}</a>' if (folder / PAGE).is_file() else _e(name)
    finals = [s for s in d["samples"] if not s["preview"]] or d["samples"]
    thumb = ""
    if finals:
        s = max(finals, key=lambda s: (s["step"], s["mtime"]))
        rel = f"{name}/{SAMPLES}/{s['tag']}.png"
        thumb = f'<a href="{_e(page)}"><img src="{_src(rel, s["mtime"])}" alt="{_e(s["tag"])}" ' \
                f'style="height:90px;image-rendering:pixelated"></a>'
    ck = d.get("checkpoint")
    newest = {j.get("kind", ""): j for j in d["jobs"]}  # the newest job of each kind (train, sample)
    jobs = ", ".join(f"{j.get('kind', '')} {j['job_id']}: {j['state']}" for j in newest.values())
    return (f"<tr><td>{link}<div class='muted small'>{_e(d['description'])}</div></td>"
            f"<td>{_badge(d['status'])}</td><td>{_progress(d['steps_done'], d['steps_total'])}</td>"
            f"<td>{_e(ck.get('step', '') if ck else '')}</td><td class='small'>{_e(jobs)}</td><td>{thumb}</td></tr>")


def index_html(root: Path, rows: str, rendered: str, rendered_on: str, comparisons: str = "") -> str:
    """``experiments/index.html``: one row per experiment, then one per comparison page (if any)."""
    body = ("<h1>ddpm-hpc experiments</h1>"
            f'<p class="muted">{_e(root)}</p>'
            "<table><tr><th>experiment</th><th>status</th><th>steps</th><th>last checkpoint</th><th>jobs</th>"
            f"<th>latest samples</th></tr>{rows}</table>")
    if comparisons:
        body += ("<h2>Comparisons and sweeps</h2><table><tr><th>page</th><th>experiments</th><th>best</th>"
                 f"<th>rendered</th></tr>{comparisons}</table>")
    body += f'<p class="muted small">Rendered {_e(rendered)} on {_e(rendered_on)} by ' \
            "<code>ddpm-hpc report all</code>.</p>"
    return _page("ddpm-hpc experiments", body)
