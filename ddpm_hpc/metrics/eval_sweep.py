"""``ddpm-hpc eval-sweep``: sample and score every point of a grid of ``sample.*`` settings from ONE checkpoint.

    ddpm-hpc eval-sweep mnist_best --grid sample.guidance=1,1.5,2,3 sample.steps=4,8,16 sample.sampler=euler,heun

The grid is parsed and expanded by :mod:`ddpm_hpc.sweep` (the training sweeps' own parser). Every point is checked
against the checkpoint's training config (sampler vs objective, steps vs T, guidance vs conditioning) before anything
runs; an invalid point stops the sweep with one line naming it. The experiment's own sample settings (the preset's
default, with ``SET`` overrides) are always scored too and marked ``default``. Each point draws the same N images
(the same seed and class layout as ``eval``) and is scored like ``eval``: conditional accuracy, classifier FD and FID
with their real-data floors (floor.py), NFE counted, seconds.

Results: ``experiments/<exp>/eval/sweep-<tag>.json`` (the table, rewritten after every point, so an interrupted or
requeued sweep keeps what it scored) and ``sweep-<tag>.png`` (the frontier: frontier.py), shown on the report page.
``<tag>`` = checkpoint step, N and a hash of the grid and the default settings. A point already scored in any
``sweep-*.json`` of the experiment, with the same settings, checkpoint (step and SHA-256), N and scoring (classifier,
FID network, precision), is reused unless ``--force``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..config import Experiment, build_experiment
from ..config_files import with_overrides
from ..distributed import DistContext
from ..errors import ConfigError
from ..logging_utils import log
from ..run_dir import RunDir
from ..safe_write import atomic_write
from ..sampling import NUM_CLASSES, class_blocks, find_checkpoint, load_model, sample_images, sampling_config
from ..sweep import check_key, grid_points, override, value_text
from ..devices import resolve_device
from .eval import DEFAULT_N
from .scoring import Scorer, make_scorer, summary

NOT_IMAGES = ("per_class", "n", "every", "trajectory", "checkpoint")  # sample.* keys that do not change scored images
ROW_KEYS = ("nfe_per_image", "conditional_accuracy", "classifier_fd", "classifier_fd_floor", "classifier_fd_ratio",
            "fid", "fid_floor", "fid_ratio", "predicted_class_counts")


@dataclass
class Point:
    label: str  # "sample.guidance=2 sample.steps=8", or "default"
    varied: dict  # grid key -> value
    exp: Experiment  # the trained config with this point's sample settings, checked
    default: bool = False

    @property
    def settings(self) -> dict:
        """The sample settings that decide the images (steps resolved: 0 means the sampler's default)."""
        s = {k: v for k, v in dataclasses.asdict(self.exp.sample).items() if k not in NOT_IMAGES}
        return {**s, "steps": self.exp.sample_steps}


def plan(exp: Experiment, grid: dict[str, list], trained: Experiment, source: Path) -> list[Point]:
    """Every grid point (and the experiment's own settings) checked against the checkpoint; refuses at the first
    invalid one, naming it, before anything is sampled."""
    check_keys(grid)
    base = {k: v for k, v in exp.to_dict().items() if k != "name"}

    def checked(overrides: list[str], label: str) -> Experiment:
        try:
            point = build_experiment(exp.name, with_overrides(base, overrides), exp.name)
            return sampling_config(trained, point, source)
        except ConfigError as exc:
            raise ConfigError(f"eval-sweep point {label} is refused, nothing was run: {exc}") from None

    points = []
    for values in grid_points(grid):
        overrides = [override(k, v) for k, v in values.items()]
        label = " ".join(f"{k}={value_text(v)}" for k, v in values.items())
        points.append(Point(label, values, checked(overrides, label)))
    default = Point("default", {}, checked([], "default (the experiment's sample settings)"), default=True)
    same = [p for p in points if p.settings == default.settings]
    if same:
        same[0].default = True
    else:
        points.append(default)
    return points


def _tag(step: int, n: int, grid: dict, default: dict) -> str:
    text = json.dumps({"grid": grid, "default": default}, sort_keys=True, default=str)
    return f"step{step:07d}-n{n}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _scoring_id(scorer: Scorer) -> dict:
    return {"classifier_sha256": scorer.clf.sha256, "fid_network": scorer.net.id if scorer.net else None,
            "fid_reference_images": scorer.fid_ref_images if scorer.net else None, "feature_setup": scorer.setup.key}


def _reusable(folder: Path, header: dict) -> dict[str, tuple[str, dict, dict]]:
    """Rows of earlier sweep tables scored with the same checkpoint, N and scoring, by their settings (with their
    table's floor and classifier)."""
    found = {}
    for path in sorted(folder.glob("sweep-*.json")):
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(table, dict) or any(table.get(k) != header[k] for k in ("checkpoint_sha256", "step", "n",
                                                                                  "scoring")):
            continue
        for row in table.get("points") or []:
            if isinstance(row, dict) and "sample" in row and "conditional_accuracy" in row:
                found[json.dumps(row["sample"], sort_keys=True)] = (path.name, row, table)
    return found


def run_eval_sweep(exp: Experiment, grid: dict[str, list], n: int | None = None, fid_weights: str | None = None,
                   fid_ref_images: int = 0, force: bool = False, log_fn=log) -> Path:
    """Score every grid point from the checkpoint ``exp.sample.checkpoint``; returns the table's path."""
    device = resolve_device(exp.train.device, DistContext())
    ckpt = find_checkpoint(exp.name, exp.sample.checkpoint)
    trained, model, weights = load_model(ckpt, device)
    points = plan(exp, grid, trained, ckpt.path)
    n = n or DEFAULT_N
    default = next(p for p in points if p.default)
    tag = _tag(ckpt.step, n, grid, default.settings)
    folder = RunDir(exp.name).eval
    out = folder / f"sweep-{tag}.json"
    scorer = make_scorer(trained.data.dataset, device, fid_weights, fid_ref_images, log_fn)
    header = {"experiment": exp.name, "checkpoint": str(ckpt.path), "checkpoint_sha256": ckpt.sha256,
              "step": ckpt.step, "weights": weights, "dataset": trained.data.dataset, "n": n,
              "grid": grid, "scoring": _scoring_id(scorer), "device": str(device), "plot": f"sweep-{tag}.png"}
    reuse = {} if force else _reusable(folder, header)
    conditional = trained.model.conditioning != "none"
    labels = class_blocks(NUM_CLASSES[trained.data.dataset], n, device) if conditional else None
    log_fn(f"eval-sweep {exp.name}: {len(points)} points from step {ckpt.step} ({weights} weights), {n} images each, "
           f"on {device} -> {out}")
    rows, t_start = [], time.monotonic()
    for i, point in enumerate(points, 1):
        head = f"[{i}/{len(points)}] {point.label}" + (" (the preset's default)" if point.default else "")
        key = json.dumps(point.settings, sort_keys=True, default=str)
        if key in reuse:
            source, old, scores = reuse[key]
            row = {**old, "point": point.varied, "label": point.label, "default": point.default, "reused_from": source}
            log_fn(f"{head}: scored before, reused from {source}")
        else:
            t0 = time.monotonic()
            log_fn(f"{head}: sampling {n} images")
            drawn = sample_images(point.exp, model, device, labels, n)
            scores = scorer.score(drawn.images, drawn.labels, log_fn)
            row = {"point": point.varied, "label": point.label, "default": point.default, "sample": point.settings,
                   **{k: scores.get(k) for k in ROW_KEYS if k != "nfe_per_image"}, "nfe_per_image": drawn.nfe,
                   "sampling_seconds": round(drawn.seconds, 2), "seconds": round(time.monotonic() - t0, 2),
                   "reused_from": None}
            log_fn(f"{head}: {summary(row)} ({row['seconds']:.1f} s)")
            scores["floor"] = {k: scores.get(k) for k in ("floor_images", "floor_class_counts", "floor_note",
                                                          "fid_floor_note") if k in scores}
        header.setdefault("floor", scores.get("floor"))  # the same for every point: same N, classes, scoring
        header.setdefault("classifier", scores.get("classifier"))
        rows.append(row)
        table = {**header, "points": rows, "complete": i == len(points),
                 "seconds": round(time.monotonic() - t_start, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(out, (json.dumps(table, indent=1, default=str) + "\n").encode())
    _finish(exp.name, table, folder, log_fn)
    return out


def _finish(name: str, table: dict, folder: Path, log_fn) -> None:
    from ..report import refresh
    from .frontier import frontier_plot

    png = frontier_plot(table, folder / table["plot"])
    refresh(name, log_fn)
    log_fn(f"wrote {folder / table['plot'].replace('.png', '.json')} and {png} ({len(table['points'])} points, "
           f"{table['seconds']:.0f} s); the report page shows the frontier")


def check_keys(grid: dict[str, list]) -> None:
    """Only ``sample.*`` settings vary (one checkpoint), and each key names a setting."""
    if not grid:
        raise ConfigError("eval-sweep: an empty grid; give e.g. GRID=\"sample.guidance=1,2 sample.steps=4,8\"")
    for key in grid:
        check_key(key, "eval-sweep grid")
        if not key.startswith("sample.") or key == "sample.checkpoint":
            raise ConfigError(f"eval-sweep grid: {key} cannot vary here: an eval-sweep samples one checkpoint with "
                              f"other sample.* settings (training settings need a training sweep: make sweep)")


def check_before_submit(exp: Experiment, grid: dict[str, list]) -> int:
    """On the login node: the keys, and every point against the newest checkpoint's stored config when there is
    one (its metadata only: no tensors read). Returns the number of points (0 when no checkpoint can be read)."""
    from ..checkpoint import CorruptCheckpoint, checkpoint_name, newest_file, read_metadata
    from ..config import experiment_from_json

    check_keys(grid)
    which, folder = exp.sample.checkpoint, paths.checkpoint_dir(exp.name)
    if which in ("latest", ""):
        path = newest_file(folder)
    else:
        path = folder / checkpoint_name(int(which)) if which.isdigit() else Path(which).expanduser()
    try:
        trained = experiment_from_json(read_metadata(path)["config"]) if path and path.is_file() else None
    except (OSError, ValueError, KeyError, CorruptCheckpoint):
        trained = None  # the job's own loader reports it
    return len(plan(exp, grid, trained, path)) if trained is not None else 0
