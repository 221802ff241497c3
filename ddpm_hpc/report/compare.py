"""One page comparing experiments (a sweep's members, or any ``ddpm-hpc compare A B C``): a sortable table, the loss
curves overlaid, the grids side by side at one step, the best member by a chosen metric marked.

The page is self-contained: the overlay plot and copies of the grids lie beside it, so it opens after ``make pull``
(or copied alone) without a server. The member states come from ``experiment_state.collect``, as on each member's
own page; nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .. import paths
from ..checkpoint import atomic_write
from ..errors import UserError
from .compare_html import METRICS, comparison_html
from .experiment_state import _read_metrics, collect
from .sweep_html import is_sweep

PLOT = "loss_curves.png"
GRIDS = "grids"
DATA = "comparison.json"
DEFAULT_ORDER = ("fid", "classifier_fd", "loss")  # the first that every member with any value has
IGNORED_KEYS = ("name", "description")  # differ between any two experiments; never "what varies"
# Eval settings that must agree for the members' eval metrics to compare.
EVAL_SETTINGS = ("n", "sampler", "steps", "guidance", "eta", "weights", "fid_reference_images")


def default_out_dir(names: list[str]) -> Path:
    """``experiments/_compare/<names joined by +>``, the same folder for the same set in any order; long sets get a
    short digest instead of the full list."""
    key = "+".join(sorted(names))
    if len(key) > 80:
        key = f"{sorted(names)[0]}+{len(names) - 1}more-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    return paths.experiments_root() / "_compare" / key


def check_names(names: list[str]) -> None:
    """For the command line: every name an experiment here (an output folder or a YAML file), none twice."""
    import difflib

    from .experiment_state import experiment_names

    known = experiment_names()
    for name in names:
        paths.check_name(name)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"no experiment '{name}' in {paths.experiments_root()} (no output folder, no YAML "
                            f"file){hint}")
    twice = [n for n in names if names.count(n) > 1]
    if twice:
        raise UserError(f"'{twice[0]}' is named twice in the comparison")


def _flat(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def varied_from_configs(configs: dict[str, dict]) -> dict[str, dict[str, str]]:
    """The config values that differ between the members, as ``{member: {"train.lr": "0.0003", ...}}``."""
    flat = {name: _flat(cfg) for name, cfg in configs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f if k not in IGNORED_KEYS))
    differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1]
    return {name: {k: _show(f[k]) if k in f else "" for k in differ} for name, f in flat.items()}


def _newest_eval(evals: list) -> tuple[str, dict] | None:
    """The eval of the latest step (then the newest file) among ``eval/*.json`` (not eval-sweep tables)."""
    scored = [(f, v) for f, v in evals if isinstance(v, dict) and not is_sweep(f, v)]
    if not scored:
        return None
    return max(scored, key=lambda fv: (fv[1].get("step") if isinstance(fv[1].get("step"), int) else -1,
                                       str(fv[1].get("created", "")), fv[0]))


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def _compute(d: dict) -> tuple[float | None, str]:
    """Hours of training times the devices it held: GPU-hours for SLURM jobs with GPUs (slurm.gpus_per_node x nodes
    from the config), else hours of the one local process, named after train.device."""
    seconds = _number(d.get("train_seconds"))
    if seconds is None:
        return None, ""
    cfg = d.get("config") or {}
    slurm, train = cfg.get("slurm") or {}, cfg.get("train") or {}
    gpus = int(slurm.get("gpus_per_node") or 0) * int(slurm.get("nodes") or 1)
    if d.get("jobs") and gpus:
        return seconds / 3600 * gpus, f"GPU-h ({gpus} GPU{'s' if gpus > 1 else ''})"
    device = str(train.get("device", "auto"))
    kind = "CPU-h" if device == "cpu" else "GPU-h" if device.startswith("cuda") else "h"
    return seconds / 3600, f"{kind} (local, 1 process, train.device={device})"


def _member(name: str) -> dict:
    d = collect(name)
    ev = _newest_eval(d["evals"])
    evalv = ev[1] if ev else {}
    hours, unit = _compute(d)
    return {
        "name": name, "state": d["status"], "steps_done": d["steps_done"], "steps_total": d["steps_total"],
        "config": d["config"], "samples": d["samples"], "jobs": d["jobs"],
        "eval_file": ev[0] if ev else None, "eval_settings": {k: evalv.get(k) for k in EVAL_SETTINGS if k in evalv},
        "values": {"loss": _number(d.get("loss_smooth")), "img_per_s": _number(d.get("img_per_s")),
                   "compute_hours": hours, "accuracy": _number(evalv.get("conditional_accuracy")),
                   "classifier_fd": _number(evalv.get("classifier_fd")), "fid": _number(evalv.get("fid"))},
        "compute_unit": unit, "train_seconds": d.get("train_seconds"),
        "page": paths.experiment_dir(name) / "index.html",
    }


def choose_metric(members: list[dict], metric: str | None) -> str:
    """``metric`` if given (checked), else the first of DEFAULT_ORDER that every member with any value has."""
    if metric is not None:
        if metric not in METRICS:
            raise UserError(f"unknown --metric '{metric}'; choose from {', '.join(METRICS)}")
        return metric
    active = [m for m in members if any(v is not None for v in m["values"].values())] or members
    for key in DEFAULT_ORDER:
        if active and all(m["values"][key] is not None for m in active):
            return key
    return "loss"


def best_member(members: list[dict], metric: str) -> str | None:
    scored = [m for m in members if m["values"][metric] is not None]
    if not scored:
        return None
    lower = METRICS[metric][1]
    return (min if lower else max)(scored, key=lambda m: m["values"][metric])["name"]


def _setting(s: dict) -> tuple[bool, str]:
    """What produced a grid, apart from its step: ``step0001500-heun10-n100-seed1234`` -> (False, ``heun10-...``)."""
    tag = s["tag"].removeprefix("preview-")
    return bool(s["preview"]), tag.split("-", 1)[1] if "-" in tag else tag


def choose_grids(members: list[dict]) -> tuple[int | None, dict[str, dict]]:
    """The newest step at which every member with grids has one (final or preview), and each member's grid there:
    the same sampler settings for all where they share one, final grids before previews. No step in common: each
    member's newest grid, and step None."""
    have = {m["name"]: m["samples"] for m in members if m["samples"]}
    if not have:
        return None, {}
    common = set.intersection(*({s["step"] for s in grids} for grids in have.values()))
    if not common:
        return None, {n: max(g, key=lambda s: (s["step"], not s["preview"], s["mtime"])) for n, g in have.items()}
    step = max(common)
    at_step = {n: [s for s in g if s["step"] == step] for n, g in have.items()}
    shared = sorted(set.intersection(*({_setting(s) for s in g} for g in at_step.values())))  # finals sort first
    return step, {n: max(g, key=lambda s: (bool(shared) and _setting(s) == shared[0], not s["preview"], s["mtime"]))
                  for n, g in at_step.items()}


def loss_overlay(members: list[dict], path: Path, best: str | None) -> Path | None:
    """The smoothed loss of every member against step, log scale, in one PNG. None if no member logged any."""
    curves = []
    for m in members:
        records = _read_metrics(paths.experiment_dir(m["name"]) / "metrics.jsonl")
        points = [(r["step"], r["loss_smooth"]) for r in records if _number(r.get("loss_smooth")) is not None
                  and r["loss_smooth"] > 0]
        if points:
            curves.append((m["name"], points))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4 + 0.12 * max(0, len(curves) - 10)), dpi=100)
    styles = ("-", "--", ":", "-.")
    for i, (name, points) in enumerate(curves):
        steps, losses = zip(*points)
        ax.plot(steps, losses, styles[(i // 10) % len(styles)], color=f"C{i % 10}",
                linewidth=2.6 if name == best else 1.2, label=f"{name} (best)" if name == best else name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("smoothed MSE loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def _copy_grids(picks: dict[str, dict], out_dir: Path) -> dict[str, str]:
    """Copies of the chosen grids in ``out_dir/grids/`` (the page then needs no other folder); drops stale ones."""
    folder = out_dir / GRIDS
    folder.mkdir(parents=True, exist_ok=True)
    rel = {}
    for name, s in picks.items():
        src = paths.experiment_dir(name) / "samples" / f"{s['tag']}.png"
        dst = folder / f"{name}--{s['tag']}.png"
        try:
            if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
                atomic_write(dst, src.read_bytes())
        except OSError:
            continue  # removed while we looked: shown as missing
        rel[name] = f"{GRIDS}/{dst.name}"
    keep = {Path(r).name for r in rel.values()}
    for old in folder.glob("*.png"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return rel


def write_comparison(names: list[str], out_dir: Path, title: str | None = None,
                     varied: dict[str, dict[str, str]] | None = None, metric: str | None = None) -> Path:
    """Write ``out_dir/index.html`` comparing the experiments ``names`` (with ``loss_curves.png``, ``grids/`` and
    ``comparison.json`` beside it); returns the page's path.

    ``varied`` maps each member to the values that distinguish it (``{"train.lr": "3e-4"}``); None works them out
    from the stored configs. ``metric`` (a key of METRICS) picks the best member; None picks a sensible one."""
    if not names:
        raise UserError("nothing to compare: no experiment names given")
    for name in names:
        paths.check_name(name)
    twice = [n for n in names if names.count(n) > 1]
    if twice:
        raise UserError(f"'{twice[0]}' is named twice in the comparison")
    if metric is not None and metric not in METRICS:
        choose_metric([], metric)  # raises the one-line error before anything is written
    members = [_member(n) for n in names]
    if varied is None:
        varied = varied_from_configs({m["name"]: m["config"] for m in members})
    metric = choose_metric(members, metric)
    best = best_member(members, metric)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = loss_overlay(members, out_dir / PLOT, best)
    grid_step, picks = choose_grids(members)
    grids = _copy_grids(picks, out_dir)
    title = title or f"Comparison of {len(names)} experiment{'s' if len(names) > 1 else ''}"
    page = out_dir / "index.html"
    data = {"title": title, "metric": metric, "best": best, "grid_step": grid_step, "members": [
        {k: v for k, v in m.items() if k not in ("config", "samples", "jobs", "page")}
        | {"varied": varied.get(m["name"], {}), "grid": picks[m["name"]]["tag"] if m["name"] in picks else None}
        for m in members]}
    atomic_write(out_dir / DATA, (json.dumps(data, indent=1, default=str) + "\n").encode())
    html = comparison_html(title, members, varied, metric, best, grid_step, picks, grids,
                           PLOT if plot else None, out_dir)
    atomic_write(page, html.encode("utf-8"))
    return page

