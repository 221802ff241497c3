"""The quality frontier of one checkpoint: sampler settings scored by the toolkit's own eval (docs/quality.md).

    python benchmarks/quality_frontier.py mnist_best --checkpoint 10000 [--n 500] [--points A,B,...]
                                          [--table benchmarks/results/quality-mnist_best.json]

Every point is one ``run_eval`` (ddpm_hpc/metrics/eval.py: the same sampling, classifier, real-data floor and NFE
counting as ``make eval``), so each writes its own ``experiments/<exp>/eval/fresh-<tag>.json``; a point whose eval
file exists is read back, not sampled again, so an interrupted run resumes. The table (JSON and markdown) gathers
them: sampler, steps, time grid, guidance (weight, interval, schedule), NFE per image (counted), conditional accuracy,
classifier FD, its floor and their ratio. Run it with DDPM_HPC_DATA / DDPM_HPC_EXPERIMENTS / DDPM_HPC_CHECKPOINTS
pointing at the real data and the trained run (benchmarks/real_mnist.py writes real digits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ddpm_hpc.config import load_experiment  # noqa: E402
from ddpm_hpc.errors import UserError  # noqa: E402
from ddpm_hpc.metrics.classifier import weights_path  # noqa: E402
from ddpm_hpc.metrics.eval import run_eval  # noqa: E402

# name -> sample.* overrides. The first three are the reference rows; the rest spend at most 10 evaluations.
POINTS = {
    "preset": [],
    "heun10-unguided": ["sample.guidance=1"],
    "euler4-w2": ["sample.sampler=euler", "sample.steps=4"],
    "2m10-unguided": ["sample.sampler=flow_dpmpp2m", "sample.steps=10", "sample.guidance=1"],
    "2m5-w2": ["sample.sampler=flow_dpmpp2m", "sample.steps=5"],
    "2m5-w2-linear": ["sample.sampler=flow_dpmpp2m", "sample.steps=5", "sample.guidance_schedule=linear"],
    "euler7-w2-gi": ["sample.sampler=euler", "sample.steps=7", "sample.guidance_interval=[0.5,3]"],
    "2m7-w2-gi": ["sample.sampler=flow_dpmpp2m", "sample.steps=7", "sample.guidance_interval=[0.5,3]"],
    "2m7-w3-gi": ["sample.sampler=flow_dpmpp2m", "sample.steps=7", "sample.guidance=3",
                  "sample.guidance_interval=[0.5,3]"],
    "2m8-w3-gi": ["sample.sampler=flow_dpmpp2m", "sample.steps=8", "sample.guidance=3",
                  "sample.guidance_interval=[0.5,1.5]"],
    "2m7-edm-w2-gi": ["sample.sampler=flow_dpmpp2m", "sample.steps=7", "sample.time_grid=edm",
                      "sample.guidance_interval=[0.4,10]"],
}
COLUMNS = ("sampler", "steps", "time_grid", "rho", "guidance", "guidance_interval", "guidance_schedule",
           "nfe_per_image", "conditional_accuracy", "classifier_fd", "classifier_fd_floor", "classifier_fd_ratio")


def score_point(name: str, overrides: list[str], n: int, log=print) -> dict:
    exp = load_experiment(name, overrides)
    try:
        path = run_eval(exp, n=n, log_fn=log)
    except UserError as err:
        if "exists" not in str(err):
            raise
        path = Path(str(err).split(" exists", 1)[0])  # scored before: read it back
        log(f"{path.name}: scored before, read back")
    return {"eval_file": str(path), **json.loads(path.read_text())}


def markdown(rows: list[dict]) -> str:
    head = ("| point | sampler | steps | grid | guidance | interval (σ) | schedule | NFE | accuracy | classifier FD "
            "| floor | × floor |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        grid = r["time_grid"] + (f" ρ={r['rho']:g}" if r["time_grid"] != "uniform" else "")
        interval = "all" if not r["guidance_interval"] else "({:g}, {:g}]".format(*r["guidance_interval"])
        lines.append(f"| {r['point']} | {r['sampler']} | {r['steps']} | {grid} | {r['guidance']:g} | {interval} | "
                     f"{r['guidance_schedule']} | {r['nfe_per_image']} | {r['conditional_accuracy']:.1%} | "
                     f"{r['classifier_fd']:.3g} | {r['classifier_fd_floor']:.3g} | {r['classifier_fd_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment")
    parser.add_argument("--checkpoint", default="latest", help="a step number, latest, or a file")
    parser.add_argument("--n", type=int, default=500, help="images per point (default 500: 50 per class)")
    parser.add_argument("--points", default=",".join(POINTS), help=f"comma-separated, of: {', '.join(POINTS)}")
    parser.add_argument("--table", type=Path, default=None, help="JSON table to write (and .md beside it)")
    args = parser.parse_args(argv)
    dataset = load_experiment(args.experiment).data.dataset
    if not weights_path(dataset).is_file():  # eval would train one on the diffusion model's own training digits
        raise SystemExit(f"no classifier at {weights_path(dataset)}: train it first on other digits (docs/quality.md)")
    rows = []
    for point in args.points.split(","):
        overrides = [*POINTS[point], f"sample.checkpoint={args.checkpoint}"]
        result = score_point(args.experiment, overrides, args.n)
        rows.append({"point": point, "overrides": POINTS[point], **{k: result.get(k) for k in COLUMNS},
                     "step": result.get("step"), "n": result.get("n"), "eval_file": result["eval_file"]})
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    text = markdown(rows)
    print(text)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(json.dumps(rows, indent=1) + "\n")
        args.table.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
