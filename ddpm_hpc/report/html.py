"""HTML for the report pages from ``experiment_state.collect``'s data: inline CSS and script, sections, pages."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from urllib.parse import quote

from .experiment_state import FAILED_JOB_STATES, SNAPSHOT
from .sweep_html import is_sweep, sweep_block

PAGE = "index.html"
MAX_PREVIEWS = 12  # newest preview grids shown; the rest stay in samples/

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
 padding:0 1.2em 3em;color:#1d2330;background:#fafbfc}
h1{font-size:1.6em;margin:.8em 0 .1em}h2{font-size:1.2em;margin:1.6em 0 .5em;border-bottom:1px solid #dde2ea;
 padding-bottom:.2em}h3{font-size:1em;margin:1.2em 0 .4em}
a{color:#0b5cad}.muted{color:#667085}.small{font-size:.85em}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #dde2ea;padding:.25em .6em;text-align:left;
 vertical-align:top}th{background:#eef1f5;font-weight:600}
.kv td:first-child{color:#475467;white-space:nowrap}
.grid{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:.6em}
figure img{display:block;max-width:100%;height:auto;image-rendering:pixelated}
figcaption{font-size:.85em;margin-top:.4em}
.badge{display:inline-block;padding:.05em .55em;border-radius:1em;font-size:.85em;font-weight:600}
.ok{background:#d1fadf;color:#05603a}.run{background:#d1e9ff;color:#1849a9}.stop{background:#fef0c7;color:#93370d}
.bad{background:#fee4e2;color:#912018}
.bar{height:.55em;width:14em;background:#e4e7ec;border-radius:.3em;display:inline-block;vertical-align:middle;
 overflow:hidden}.bar span{display:block;height:100%;background:#2e90fa}
details{margin:.5em 0}summary{cursor:pointer;color:#0b5cad}
pre{background:#f2f4f7;padding:.6em;overflow:auto;font-size:.85em}
.broken{outline:3px solid #d92d20}.missing{color:#b42318;font-weight:600}
"""

# Marks images that did not load (e.g. a file missing after a partial pull) and records the count on <body>, which a
# headless browser test reads back. Inline, no network.
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    var good = imgs[i].complete && imgs[i].naturalWidth > 0;
    imgs[i].setAttribute('data-loaded', good ? 'yes' : 'no');
    if (good) { ok++; } else {
      imgs[i].className += ' broken';
      var note = document.createElement('div');
      note.className = 'missing';
      note.textContent = 'image missing: ' + imgs[i].getAttribute('src');
      imgs[i].parentNode.insertBefore(note, imgs[i].nextSibling);
    }
  }
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
"""


def _e(value) -> str:
    return escape(str(value), quote=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _src(rel: str, mtime: float | None = None) -> str:
    """A relative URL for a file under the experiment folder; ``?v=`` defeats stale browser caches after a pull."""
    url = "/".join(quote(part) for part in rel.split("/"))
    return _e(f"{url}?v={int(mtime)}" if mtime else url)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _kv_table(items) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_fmt(v))}</td></tr>" for k, v in items)
    return f'<table class="kv">{rows}</table>'


def _flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix or "value", value)]


def _badge(status: str) -> str:
    cls = {"finished": "ok", "in progress": "run", "failed": "bad"}.get(status, "stop")
    return f'<span class="badge {cls}">{_e(status)}</span>'


def _job_badge(state: str) -> str:
    s = state.upper()
    cls = "ok" if s.startswith("COMPLETED") else "run" if s in ("RUNNING", "PENDING", "REQUEUED", "CONFIGURING",
                                                                   "COMPLETING", "SUBMITTED") \
        else "bad" if s in FAILED_JOB_STATES | {"CANCELLED", "PREEMPTED"} else "stop"
    return f'<span class="badge {cls}">{_e(state)}</span>'


def _progress(done, total) -> str:
    if not total:
        return _e(done)
    pct = max(0.0, min(100.0, 100.0 * done / total))
    return f'{_e(done)} / {_e(total)} <span class="bar"><span style="width:{pct:.1f}%"></span></span> {pct:.0f}%'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style><script>{SCRIPT}</script></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def _state_section(d: dict) -> str:
    html_rows = [f"<tr><td>status</td><td>{_badge(d['status'])}</td></tr>",
                 f"<tr><td>steps</td><td>{_progress(d['steps_done'], d['steps_total'])}</td></tr>"]
    simple = []
    if d.get("loss_smooth") is not None:
        simple.append(("loss (smoothed / last interval)", f"{d['loss_smooth']:.5g} / {d['loss']:.5g}"))
    if d.get("train_seconds") is not None:
        simple.append(("training time (all restarts)", _duration(d["train_seconds"])))
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


def _png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (no image library needed)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _img(rel: str, folder: Path, alt: str, min_width: int = 240, max_width: int = 560) -> str:
    """An <img> scaled by a whole factor so small grids (32 px tiles) are readable and stay crisp."""
    path = folder / rel
    size = _png_size(path)
    dims = ""
    if size and size[0] > 0:
        w, h = size
        scale = max(1, min_width // w) if w < min_width else 1
        scale = min(scale, max(1, max_width // w))
        dims = f' width="{w * scale}" height="{h * scale}"'
    return f'<img src="{_src(rel, path.stat().st_mtime)}" alt="{_e(alt)}"{dims}>'


def _figure(rel: str, folder: Path, caption: str, alt: str, extra: str = "", min_width: int = 240) -> str:
    if not (folder / rel).is_file():
        return ""
    image = _img(rel, folder, alt, min_width)
    return f'<figure><a href="{_src(rel)}">{image}</a>{extra}<figcaption>{caption}</figcaption></figure>'


SAMPLE_KEYS = ("sampler", "steps", "nfe_per_image", "guidance", "eta", "seed", "weights", "images", "wall_seconds",
               "device", "created")


def _sample_figure(s: dict, folder: Path) -> str:
    tag, info = s["tag"], s["info"]
    caption = f"<b>{_e(tag)}</b>"
    links = [f'<a href="{_src("samples/" + tag + ext)}">{ext[1:]}</a>' for ext in (".json", ".safetensors")
             if (folder / "samples" / f"{tag}{ext}").is_file()]
    caption += f' <span class="small">({" · ".join(links)})</span>' if links else ""
    shown = [(k, info[k]) for k in SAMPLE_KEYS if k in info]
    rest = [(k, v) for k, v in info.items() if k not in SAMPLE_KEYS and k not in ("experiment", "step", "trajectory")]
    caption += _kv_table(shown)
    if rest:
        caption += f"<details><summary>all metadata</summary>{_kv_table(rest)}</details>"
    traj, extra = info.get("trajectory"), ""
    if isinstance(traj, str) and (folder / "samples" / traj).is_file():
        extra = (f'<div class="small muted">denoising trajectory x<sub>T</sub> … x<sub>0</sub> (rows: samples)</div>'
                 f'<a href="{_src("samples/" + traj)}">{_img("samples/" + traj, folder, f"trajectory {tag}")}</a>')
    return _figure(f"samples/{tag}.png", folder, caption, f"samples {tag}", extra)


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
        figs = "".join(_figure(f"samples/{s['tag']}.png", folder,
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
        out += f'<h3><a href="{_src("eval/" + fname)}">{_e(fname)}</a></h3>'
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
    body = (f'<p class="small"><a href="../index.html">← all experiments</a></p><h1>{_e(name)}</h1>'
            f'<p class="muted">{_e(d["description"])}</p>')
    body += _state_section(d)
    figs = _figure("loss.png", folder, "training loss (log scale): mean per log interval and smoothed", "loss curve")
    figs += _figure("forward_process.png", folder, "forward process: x<sub>0</sub>, x<sub>t</sub>, the noise, and "
                    "the network's prediction of it", "forward process")
    body += "<h2>Training</h2>" + (f"<div class='grid'>{figs}</div>" if figs else
                                   '<p class="muted">No plots yet (loss.png is written at the first checkpoint).</p>')
    body += _samples_section(d, folder)
    body += _evals_section(d, folder)
    body += _config_section(d["config"])
    files = [f for f in ("metrics.jsonl", "config.json", "jobs.json", SNAPSHOT) if (folder / f).is_file()]
    files += [f"{sub}/" for sub in ("logs", "samples", "eval", "tensorboard") if (folder / sub).is_dir()]
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
        rel = f"{name}/samples/{s['tag']}.png"
        thumb = f'<a href="{_e(page)}"><img src="{_src(rel, s["mtime"])}" alt="{_e(s["tag"])}" ' \
                f'style="height:90px;image-rendering:pixelated"></a>'
    ck = d.get("checkpoint")
    newest = {j.get("kind", ""): j for j in d["jobs"]}  # the newest job of each kind (train, sample)
    jobs = ", ".join(f"{j.get('kind', '')} {j['job_id']}: {j['state']}" for j in newest.values())
    return (f"<tr><td>{link}<div class='muted small'>{_e(d['description'])}</div></td>"
            f"<td>{_badge(d['status'])}</td><td>{_progress(d['steps_done'], d['steps_total'])}</td>"
            f"<td>{_e(ck.get('step', '') if ck else '')}</td><td class='small'>{_e(jobs)}</td><td>{thumb}</td></tr>")


def index_html(root: Path, rows: str, rendered: str, rendered_on: str, sweeps: dict[str, int] | None = None) -> str:
    """``experiments/index.html``: one row per experiment, then a link to each sweep's comparison page."""
    links = ", ".join(f'<a href="{_e(name)}/index.html">{_e(name)}</a> ({count} members)'
                      for name, count in (sweeps or {}).items())
    body = ("<h1>ddpm-hpc experiments</h1>"
            f'<p class="muted">{_e(root)}</p>'
            "<table><tr><th>experiment</th><th>status</th><th>steps</th><th>last checkpoint</th><th>jobs</th>"
            f"<th>latest samples</th></tr>{rows}</table>"
            + (f"<p>Sweeps: {links}</p>" if links else "")
            + f'<p class="muted small">Rendered {_e(rendered)} on {_e(rendered_on)} by '
            f"<code>ddpm-hpc report all</code>.</p>")
    return _page("ddpm-hpc experiments", body)
