"""The quality frontier of one checkpoint: chosen sampler settings scored by ``eval-sweep`` (docs/quality.md).

    python benchmarks/quality_frontier.py mnist_best --checkpoint 10000 [--n 500] [--points A,B,...] [--seed S]
                                          [--table benchmarks/results/quality-mnist_best.json]

The frontier worth scoring is not a product grid (a guidance interval only makes sense with the steps it spends
its evaluations on), so each point is one ``ddpm_hpc.metrics.eval_sweep.run_eval_sweep`` call, as
``make eval-sweep EXP=<exp> SET="<the point's settings>" GRID="sample.seed=1234"`` runs it: its one point is the
experiment's settings with SET (eval-sweep's "default"). Same sampling, classifier, real-data floor, NFE counting
and ``eval/sweep-*.json`` files as ``make eval-sweep``, and its reuse of points already scored (an interrupted run
resumes). Points can run in parallel processes (``--points`` subsets). The table (JSON and markdown) gathers the
points of every sweep table of that checkpoint and N: sampler, steps, time grid, guidance (weight, interval,
schedule), NFE per image (counted), conditional accuracy, classifier FD, its floor and their ratio. Run it with
DDPM_HPC_DATA, DDPM_HPC_EXPERIMENTS and DDPM_HPC_CHECKPOINTS pointing at the real data and the trained run
(benchmarks/real_mnist.py writes real digits; train the classifier on other digits first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ddpm_hpc import paths  # noqa: E402
from ddpm_hpc.config import load_experiment  # noqa: E402
from ddpm_hpc.metrics.classifier import weights_path  # noqa: E402
from ddpm_hpc.metrics.eval_sweep import run_eval_sweep  # noqa: E402

# name -> the sample settings of one point, spelt out in full (not relative to the preset's default, which changes).
# The first three are the reference rows; "heun10-w2" was the preset's default until step 10,000 was
# measured; the rest spend at most 10 evaluations (guidance intervals in sigma = (1 - t) / t; uniform 6 steps: inf,
# 5, 2, 1, 0.5, 0.2; 7 steps: inf, 6, 2.5, 1.33, 0.75, 0.4, 0.17).


def point(sampler: str, steps: int, guidance: float = 2.0, interval: str | None = None, grid: str = "uniform",
          shift: float = 1.0, rho: float = 7.0, schedule: str = "constant") -> list[str]:
    return [f"sample.sampler={sampler}", f"sample.steps={steps}", f"sample.guidance={guidance:g}",
            f"sample.guidance_interval={interval or 'null'}", f"sample.guidance_schedule={schedule}",
            f"sample.time_grid={grid}", f"sample.shift={shift:g}", f"sample.rho={rho:g}"]


POINTS = {
    "heun10-w2": point("heun", 10),
    "heun10-unguided": point("heun", 10, guidance=1),
    "euler4-w2": point("euler", 4),
    "2m10-unguided": point("flow_dpmpp2m", 10, guidance=1),
    "2m5-w2": point("flow_dpmpp2m", 5),
    "2m5-w2-linear": point("flow_dpmpp2m", 5, schedule="linear"),
    "euler7-w2-gi": point("euler", 7, interval="[0.5,3]"),
    "2m7-w2-gi": point("flow_dpmpp2m", 7, interval="[0.5,3]"),
    "2m7-w3-gi": point("flow_dpmpp2m", 7, guidance=3, interval="[0.5,3]"),
    "2m8-w3-gi": point("flow_dpmpp2m", 8, guidance=3, interval="[0.5,1.5]"),
    "2m7-edm-w2-gi": point("flow_dpmpp2m", 7, interval="[0.4,10]", grid="edm"),
    "euler4-w3": point("euler", 4, guidance=3),
    "euler5-w2": point("euler", 5),
    "2m5-w3": point("flow_dpmpp2m", 5, guidance=3),
    "2m5-edm-w2": point("flow_dpmpp2m", 5, grid="edm"),
    "2m6-w3-gi": point("flow_dpmpp2m", 6, guidance=3, interval="[0.3,6]"),
    "2m6-w2-high": point("flow_dpmpp2m", 6, interval="[0.6,1000]"),
    # added at step 10,000 (8 steps: sigma = inf, 7, 3, 1.67, 1, 0.6, 0.33, 0.14; 9 steps: inf, 8, 3.5, 2, 1.25, 0.8,
    # 0.5, 0.29, 0.13)
    "heun5-w2": point("heun", 5),
    "euler10-unguided": point("euler", 10, guidance=1),
    "2m8-w2-gi13": point("flow_dpmpp2m", 8, interval="[1,3]"),
    "2m8-w3-gi13": point("flow_dpmpp2m", 8, guidance=3, interval="[1,3]"),
    "euler8-w3-gi": point("euler", 8, guidance=3, interval="[1,3]"),
    "2m6-w3-gi-mid": point("flow_dpmpp2m", 6, guidance=3, interval="[0.6,3]"),
    "2m9-w4-gi-one": point("flow_dpmpp2m", 9, guidance=4, interval="[1.5,3]"),
    # the shift grid (sigma x shift; with shift 3, 7 steps: inf, 18, 7.5, 4, 2.25, 1.2, 0.5; 8 steps: inf, 21, 9, 5, 3,
    # 1.8, 1, 0.43; 9 steps: inf, 24, 10.5, 6, 3.75, 2.4, 1.5, 0.86, 0.38)
    "2m10-shift3-unguided": point("flow_dpmpp2m", 10, guidance=1, grid="shift", shift=3),
    "2m10-shift5-unguided": point("flow_dpmpp2m", 10, guidance=1, grid="shift", shift=5),
    "2m8-shift3-w2-gi": point("flow_dpmpp2m", 8, interval="[1.5,4]", grid="shift", shift=3),
    "2m8-shift3-w3-gi": point("flow_dpmpp2m", 8, guidance=3, interval="[1.5,4]", grid="shift", shift=3),
    "euler8-shift3-w3-gi": point("euler", 8, guidance=3, interval="[1.5,4]", grid="shift", shift=3),
    "2m7-shift3-w2-gi-wide": point("flow_dpmpp2m", 7, interval="[1.1,5]", grid="shift", shift=3),
    "2m7-shift3-w3-gi": point("flow_dpmpp2m", 7, guidance=3, interval="[1.1,3]", grid="shift", shift=3),
    "2m8-shift3-w2.5-gi": point("flow_dpmpp2m", 8, guidance=2.5, interval="[1.5,4]", grid="shift", shift=3),
    # shift 4, 8 steps: inf, 28, 12, 6.7, 4, 2.4, 1.3, 0.57
    "2m8-shift4-w2-gi": point("flow_dpmpp2m", 8, interval="[2,5]", grid="shift", shift=4),
    "2m8-shift4-w3-gi": point("flow_dpmpp2m", 8, guidance=3, interval="[2,5]", grid="shift", shift=4),
    # shift 4, 7 steps: inf, 24, 10, 5.3, 3, 1.6, 0.67; 9 steps: inf, 32, 14, 8, 5, 3.2, 2, 1.1, 0.5
    "2m7-shift4-w2-gi-wide": point("flow_dpmpp2m", 7, interval="[1.1,6]", grid="shift", shift=4),
    "2m8-shift4-w2.5-gi": point("flow_dpmpp2m", 8, guidance=2.5, interval="[2,5]", grid="shift", shift=4),
    "2m9-shift4-w5-gi-one": point("flow_dpmpp2m", 9, guidance=5, interval="[2.5,4]", grid="shift", shift=4),
    "2m9-shift3-w4-gi-one": point("flow_dpmpp2m", 9, guidance=4, interval="[2,3]", grid="shift", shift=3),
}

COLUMNS = ("sampler", "steps", "time_grid", "rho", "shift", "guidance", "guidance_interval", "guidance_schedule",
           "nfe_per_image", "conditional_accuracy", "classifier_fd", "classifier_fd_floor", "classifier_fd_ratio")


def score_point(name: str, checkpoint: str, overrides: list[str], n: int) -> dict:
    """One point: ``make eval-sweep EXP=name SET="<overrides>" GRID="sample.seed=<seed>"``, whose only point is the
    experiment's sample settings with the overrides (eval-sweep's "default"); returns its scored row."""
    exp = load_experiment(name, [f"sample.checkpoint={checkpoint}", *overrides])
    table = json.loads(run_eval_sweep(exp, {"sample.seed": [exp.sample.seed]}, n=n).read_text())
    (row,) = table["points"]
    return {**row, "step": table["step"]}


def gather(name: str, step: int, n: int, order: list[dict]) -> list[dict]:
    """The rows of every sweep table of ``name`` at this step and N, one per setting, in the order of ``order``."""
    rows = {}
    for path in sorted((paths.experiment_dir(name) / "eval").glob("sweep-*.json")):
        table = json.loads(path.read_text())
        if table.get("step") != step or table.get("n") != n:
            continue
        for row in table["points"]:
            rows.setdefault(json.dumps(row["sample"], sort_keys=True), {**row, "sweep": path.name})
    keyed = [json.dumps(o, sort_keys=True) for o in order]
    return sorted(rows.values(), key=lambda r: keyed.index(json.dumps(r["sample"], sort_keys=True))
                  if json.dumps(r["sample"], sort_keys=True) in keyed else len(keyed))


def markdown(rows: list[dict]) -> str:
    head = ("| point | sampler | steps | grid | guidance | interval (σ) | schedule | NFE | accuracy | classifier FD "
            "| floor | × floor |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        s = r["sample"]
        grid = s["time_grid"] + {"edm": f" ρ={s['rho']:g}", "shift": f" {s.get('shift', 1):g}"}.get(s["time_grid"], "")
        interval = "all" if not s["guidance_interval"] else "({:g}, {:g}]".format(*s["guidance_interval"])
        lines.append(f"| {r['name']} | {s['sampler']} | {s['steps']} | {grid} | {s['guidance']:g} | {interval} | "
                     f"{s['guidance_schedule']} | {r['nfe_per_image']} | {r['conditional_accuracy']:.1%} | "
                     f"{r['classifier_fd']:.3g} | {r['classifier_fd_floor']:.3g} | {r['classifier_fd_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment")
    parser.add_argument("--checkpoint", default="latest", help="a step number, latest, or a file")
    parser.add_argument("--n", type=int, default=500, help="images per point (default 500: 50 per class)")
    parser.add_argument("--points", default=",".join(POINTS), help=f"comma-separated, of: {', '.join(POINTS)}")
    parser.add_argument("--seed", type=int, default=None, help="another sample.seed for every point (another draw)")
    parser.add_argument("--table", type=Path, default=None, help="JSON table to write (and .md beside it)")
    args = parser.parse_args(argv)
    dataset = load_experiment(args.experiment).data.dataset
    if not weights_path(dataset).is_file():  # eval would train one on the diffusion model's own training digits
        raise SystemExit(f"no classifier at {weights_path(dataset)}: train it first on other digits (docs/quality.md)")
    settings, step = [], None
    for point in args.points.split(","):
        seed = [] if args.seed is None else [f"sample.seed={args.seed}"]
        row = score_point(args.experiment, args.checkpoint, POINTS[point] + seed, args.n)
        settings.append(row["sample"])
        step = row["step"]
    names = {json.dumps(s, sort_keys=True): p for s, p in zip(settings, args.points.split(","))}
    rows = [{"name": names.get(json.dumps(r["sample"], sort_keys=True), r["label"]), **r}
            for r in gather(args.experiment, step, args.n, settings)]
    text = markdown(rows)
    print(text)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(json.dumps(rows, indent=1, default=str) + "\n")
        args.table.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
