"""What a preset costs, as a design figure: FLOPs per image x images, counted, not timed.

    python benchmarks/preset_cost.py cifar_best [mnist_best cifar_cond_25k ...] [--json FILE]

The network's FLOPs come from ``torch.utils.flop_counter`` on the meta device (shapes only: no weights are
allocated and nothing is computed, so a 10M-parameter U-Net is counted in a second on a laptop): one forward pass,
and one forward + backward of a mean-squared loss (what a training step does per image, before the optimizer's few
FLOPs per parameter). Network evaluations per sampled image (NFE) are counted by running the preset's own sampler
and guidance settings through ``sampling.sample_images`` with a stand-in network that returns zeros. Then:

- training = (forward + backward FLOPs per image) x batch x steps;
- sampling = forward FLOPs x NFE per image, for the preset's grid and for a 500-image eval.

Matrix multiplications and convolutions only (what flop_counter counts; normalisation and activations add a few %).
Time on a given GPU is this divided by the FLOP rate it sustains on such small convolutions, which no run here
measured: the figures are for planning, not results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ddpm_hpc.config import Experiment, load_experiment  # noqa: E402
from ddpm_hpc.models import build_model  # noqa: E402
from ddpm_hpc.sampling import NUM_CLASSES, class_blocks, grid_labels, sample_images  # noqa: E402

EVAL_IMAGES = 500


def network_flops(exp: Experiment, batch: int = 2) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per image of the preset's network, counted on the meta device."""
    classes = NUM_CLASSES[exp.data.dataset]
    with torch.device("meta"):
        model = build_model(exp.model, classes).train()
        x, t = torch.randn(batch, 3, 32, 32), torch.rand(batch)
        labels = torch.zeros(batch, dtype=torch.long) if exp.model.conditioning != "none" else None
        with FlopCounterMode(display=False) as forward:
            model(x, t, labels)
        with FlopCounterMode(display=False) as both:
            model(x, t, labels).float().pow(2).mean().backward()
    return forward.get_total_flops() / batch, both.get_total_flops() / batch


def counted_nfe(exp: Experiment) -> float:
    """Network evaluations per image of the preset's sample settings, counted through the real samplers."""
    conditional = exp.model.conditioning != "none"
    n = NUM_CLASSES[exp.data.dataset] if conditional else 1
    labels = class_blocks(n, n, "cpu") if conditional else None
    result = sample_images(exp, lambda x, t, y: torch.zeros_like(x), torch.device("cpu"), labels, n)
    return result.nfe


def preset_cost(exp: Experiment) -> dict:
    forward, train = network_flops(exp)
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(exp.model, NUM_CLASSES[exp.data.dataset]).parameters())
    nfe = counted_nfe(exp)
    grid_images = grid_labels(exp, "cpu")[1]
    train_images = exp.data.batch_size * exp.train.steps
    s = exp.sample
    return {"experiment": exp.name, "parameters": params, "forward_flops_per_image": forward,
            "train_flops_per_image": train, "train_images": train_images, "train_flops": train * train_images,
            "sampler": f"{s.sampler} {exp.sample_steps} steps, {s.time_grid} grid"
                       + ("" if s.grid_parameter is None else f" {s.grid_parameter:g}")
                       + f", guidance {s.guidance:g}"
                       + (" on ({:g}, {:g}]".format(*s.guidance_interval) if s.guidance_interval else ""),
            "nfe_per_image": nfe, "sample_flops_per_image": forward * nfe, "grid_images": grid_images,
            "grid_flops": forward * nfe * grid_images, "eval_images": EVAL_IMAGES,
            "eval_flops": forward * nfe * EVAL_IMAGES}


def describe(c: dict) -> str:
    return (f"{c['experiment']}: {c['parameters'] / 1e6:.2f} M parameters; training "
            f"{c['train_flops_per_image'] / 1e9:.2f} GFLOP per image x {c['train_images']:,} images "
            f"= {c['train_flops']:.2e} FLOP; sampling ({c['sampler']}) {c['nfe_per_image']} NFE x "
            f"{c['forward_flops_per_image'] / 1e9:.2f} GFLOP = {c['sample_flops_per_image'] / 1e9:.1f} GFLOP per "
            f"image, {c['grid_flops']:.2e} FLOP for the {c['grid_images']}-image grid, {c['eval_flops']:.2e} FLOP "
            f"for a {c['eval_images']}-image eval")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    costs = [preset_cost(load_experiment(name)) for name in args.experiments]
    for c in costs:
        print(describe(c))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(costs, indent=1) + "\n")


if __name__ == "__main__":
    main()
