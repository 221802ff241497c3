"""The building blocks of every report page: inline CSS and script, escaping, cache-safe image links, badges,
progress bars, key/value tables and the page frame."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from urllib.parse import quote


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
