"""``ddpm-hpc`` command line: train, sample, data, list (the cluster commands live in ``jobs/`` and register
themselves here when that package is importable)."""

from __future__ import annotations

import argparse
import sys

from .config import available_experiments, load_experiment
from .errors import UserError

EXIT_INTERRUPTED = 3  # training stopped by a signal after saving a checkpoint; run again to continue


def cmd_train(args) -> int:
    exp = load_experiment(args.experiment, args.overrides)  # first: a bad name or file fails without importing torch
    from . import distributed
    from .pipeline import run_training
    from .trainer import resolve_device

    # Under torchrun (WORLD_SIZE > 1) every process is one rank; otherwise a plain run (rank 0 of 1).
    ctx = distributed.init_from_env(resolve_device(exp.train.device, distributed.DistContext()).type)
    try:
        outcome = run_training(exp, ctx)
    finally:
        distributed.shutdown()
    return 0 if outcome.status == "finished" else EXIT_INTERRUPTED


def cmd_sample(args) -> int:
    exp = load_experiment(args.experiment, args.overrides)
    from .pipeline import run_sampling

    run_sampling(exp)
    return 0


def cmd_report(args) -> int:
    from .report import render

    for page in render(args.target):
        print(f"wrote {page}")
    return 0


def cmd_data(args) -> int:
    from .data import DATASETS, download_dataset

    for name in args.datasets or [d for d in DATASETS if d != "digits"]:
        print(f"{name}: ready in {download_dataset(name)}")
    return 0


def cmd_eval(args) -> int:
    from .metrics.eval import run_eval

    run_eval(load_experiment(args.experiment, args.overrides), n=args.n, fid_weights=args.fid_weights,
             samples=args.samples, fid_ref_images=args.fid_ref_images)
    return 0


def cmd_classifier(args) -> int:
    from .distributed import DistContext
    from .metrics.classifier import train_classifier
    from .trainer import resolve_device

    device = resolve_device(args.device, DistContext())
    print(f"wrote {train_classifier(args.dataset, steps=args.steps, seed=args.seed, device=device).path}")
    return 0


def cmd_list(args) -> int:
    names = available_experiments()
    width = max((len(n) for n in names), default=0)
    for name in names:
        try:
            description = load_experiment(name).description
        except UserError as exc:
            description = f"(invalid: {exc})"
        print(f"{name:<{width}}  {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpm-hpc", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_experiment(p):
        p.add_argument("experiment", help="experiment name: experiments/<name>.yaml")
        p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="e.g. train.steps=500")
        return p

    with_experiment(sub.add_parser("train", help="train here, in this process (resumes automatically)")) \
        .set_defaults(func=cmd_train)
    with_experiment(sub.add_parser("sample", help="sample the latest checkpoint and write grids")) \
        .set_defaults(func=cmd_sample)
    p = sub.add_parser("data", help="download datasets into $DDPM_HPC_DATA (run on a machine with internet)")
    p.add_argument("datasets", nargs="*", choices=["mnist", "cifar10"], help="default: both")
    p.set_defaults(func=cmd_data)
    sub.add_parser("list", help="list experiments").set_defaults(func=cmd_list)
    p = with_experiment(sub.add_parser("eval", help="score N samples: classifier accuracy and FD, FID if weights"))
    p.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--fid-weights", help="Inception-v3 weights file (default: $DDPM_HPC_FID_WEIGHTS or data/fid/)")
    p.add_argument("--fid-ref-images", type=int, default=0, help="FID reference: first N training images (0: all)")
    p.add_argument("--samples", help="score an existing samples/<tag>.safetensors instead of sampling")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("classifier", help="train the small classifier that eval scores samples with")
    p.add_argument("dataset", choices=["mnist", "cifar10", "digits"])
    p.add_argument("--steps", type=int, default=None, help="training steps (default per dataset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_classifier)
    p = sub.add_parser("report", help="write experiments/<name>/index.html and experiments/index.html (static HTML)")
    p.add_argument("target", nargs="?", default="all", metavar="EXP|all", help="default: all")
    p.set_defaults(func=cmd_report)
    for register in _extensions():
        register(sub, with_experiment)
    return parser


def _extensions():
    """Subcommands contributed by other packages (``jobs`` for SLURM, metrics, ...)."""
    out = []
    try:
        from jobs.cli import register  # the cluster side, present in a repo checkout
        out.append(register)
    except ImportError as exc:
        if getattr(exc, "name", "") not in ("jobs", "jobs.cli"):
            raise
    return out


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
