"""Static HTML reports that open from disk after ``make pull``: no server, no internet, relative links only.

``experiments/<exp>/index.html``: the config, the run's state (steps, last checkpoint, jobs, training time), the loss
curve, the forward-process figure, the sample grids by step with their metadata and any ``eval/*.json`` results.
``experiments/index.html``: one row per experiment.

Alongside each page, ``report.json`` keeps the state it was rendered from, so a page re-rendered on a laptop (where
``checkpoints/`` and ``sacct`` are usually absent) still shows the last checkpoint and job states seen on the cluster.
Nothing here imports torch; a failed refresh during training is logged and never stops the run.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from . import paths

PAGE = "index.html"
SNAPSHOT = "report.json"
SACCT_TIMEOUT_S = 5
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


# ---------------------------------------------------------------------------------------------------------------------
# Reading what the run left on disk (every reader tolerates missing or half-written files)


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
    """The config the run used (``config.json``, written by the trainer), else the YAML file as it is now."""
    cfg = _read_json(paths.experiment_dir(name) / "config.json")
    if isinstance(cfg, dict):
        return cfg
    try:
        from .config import load_experiment

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
    pointer = _read_json(paths.checkpoint_dir(name) / "latest.json")
    if isinstance(pointer, dict) and pointer.get("file"):
        path = paths.checkpoint_dir(name) / pointer["file"]
        info = {"file": pointer["file"], "step": pointer.get("step"), "sha256": pointer.get("sha256"),
                "folder": str(paths.checkpoint_dir(name)), "present": path.is_file()}
        try:
            info["bytes"] = path.stat().st_size
            info["written"] = _iso(path.stat().st_mtime)
        except OSError:
            pass
        return info
    old = previous.get("checkpoint")
    if isinstance(old, dict):
        return {**old, "present": False, "as_of": previous.get("rendered")}
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


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


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
    if total and done >= total:
        status = "finished"
    elif done:
        status = "in progress"
    else:
        status = "not started"
    return {
        "experiment": name, "description": cfg.get("description", ""), "config": cfg, "status": status,
        "steps_done": done, "steps_total": total, "loss": last.get("loss"), "loss_smooth": last.get("loss_smooth"),
        "img_per_s": last.get("img_per_s"), "train_seconds": last.get("wall_seconds"),
        "metrics_updated": _iso(updated) if updated else None, "checkpoint": ckpt,
        "jobs": _jobs(name, previous, live_states),
        "samples": _samples(name), "evals": _evals(name),
        "rendered": _iso(time.time()), "rendered_on": socket.gethostname(),
    }


# ---------------------------------------------------------------------------------------------------------------------
# HTML


def _e(value) -> str:
    return html.escape(str(value), quote=True)


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
    cls = {"finished": "ok", "in progress": "run", "not started": "stop"}.get(status, "stop")
    return f'<span class="badge {cls}">{_e(status)}</span>'


def _job_badge(state: str) -> str:
    s = state.upper()
    cls = "ok" if s.startswith("COMPLETED") else "run" if s in ("RUNNING", "PENDING", "REQUEUED", "CONFIGURING",
                                                                   "COMPLETING", "SUBMITTED") \
        else "bad" if s in ("FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                            "BOOT_FAIL", "DEADLINE") else "stop"
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


def _evals_section(d: dict) -> str:
    if not d["evals"]:
        return ""
    out = "<h2>Evaluation</h2>"
    for fname, value in d["evals"]:
        out += f'<h3><a href="{_src("eval/" + fname)}">{_e(fname)}</a></h3>'
        if isinstance(value, dict):
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
    body += _evals_section(d)
    body += _config_section(d["config"])
    files = [f for f in ("metrics.jsonl", "config.json", "jobs.json", SNAPSHOT) if (folder / f).is_file()]
    files += [f"{sub}/" for sub in ("logs", "samples", "eval") if (folder / sub).is_dir()]
    if files:
        body += "<h2>Files</h2><p>" + " · ".join(f'<a href="{_src(f)}">{_e(f)}</a>' for f in files) + "</p>"
    body += f'<p class="muted small">Rendered {_e(d["rendered"])} on {_e(d["rendered_on"])} by ' \
            f"<code>ddpm-hpc report {_e(name)}</code>.</p>"
    return _page(f"{name} — ddpm-hpc", body)


# ---------------------------------------------------------------------------------------------------------------------
# Writing


def _write(path: Path, text: str) -> None:
    """Atomic replace, so a browser (or rsync) never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def experiment_names() -> list[str]:
    """Experiments with an output folder, plus those with only a YAML file (not run yet)."""
    root = paths.experiments_root()
    names = set()
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and not p.name.startswith((".", "_")):
                names.add(p.name)
            elif p.suffix == ".yaml" and not p.name.startswith((".", "_")):
                names.add(p.stem)
    return sorted(names)


def render_experiment(name: str) -> Path:
    """Write ``experiments/<name>/index.html`` and ``report.json``; returns the page's path."""
    folder = paths.experiment_dir(name)
    d = collect(name)
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = {k: v for k, v in d.items() if k not in ("config",)}
    _write(folder / SNAPSHOT, json.dumps(snapshot, indent=1, default=str) + "\n")
    _write(folder / PAGE, experiment_html(d, folder))
    return folder / PAGE


def _index_row(name: str, root: Path) -> str:
    folder = root / name
    if not folder.is_dir():
        return (f"<tr><td>{_e(name)}</td><td><span class='badge stop'>not run</span></td><td></td><td></td>"
                f"<td></td><td></td></tr>")
    d = collect(name, live_states=False)
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
    jobs = ", ".join(f"{j.get('kind', '')} {j['job_id']}: {j['state']}" for j in d["jobs"][-2:])
    return (f"<tr><td>{link}<div class='muted small'>{_e(d['description'])}</div></td>"
            f"<td>{_badge(d['status'])}</td><td>{_progress(d['steps_done'], d['steps_total'])}</td>"
            f"<td>{_e(ck.get('step', '') if ck else '')}</td><td class='small'>{_e(jobs)}</td><td>{thumb}</td></tr>")


def render_index() -> Path:
    """Write ``experiments/index.html`` listing every experiment."""
    root = paths.experiments_root()
    rows = "".join(_index_row(n, root) for n in experiment_names())
    body = ("<h1>ddpm-hpc experiments</h1>"
            f'<p class="muted">{_e(root)}</p>'
            "<table><tr><th>experiment</th><th>status</th><th>steps</th><th>last checkpoint</th><th>jobs</th>"
            f"<th>latest samples</th></tr>{rows}</table>"
            f'<p class="muted small">Rendered {_e(_iso(time.time()))} on {_e(socket.gethostname())} by '
            f"<code>ddpm-hpc report all</code>.</p>")
    path = root / PAGE
    _write(path, _page("ddpm-hpc experiments", body))
    return path


def render(target: str = "all") -> list[Path]:
    """``all``: every experiment's page and the index; a name: that page and the index."""
    names = experiment_names() if target == "all" else [paths.check_name(target)]
    if target != "all" and target not in experiment_names():
        from .errors import UserError

        raise UserError(f"no experiment '{target}' in {paths.experiments_root()} (no output folder, no YAML file)")
    pages = [render_experiment(n) for n in names if target != "all" or paths.experiment_dir(n).is_dir()]
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
