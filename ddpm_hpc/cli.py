"""The ``ddpm-hpc`` command line. The SLURM commands (submit, status, ...) live in the ``jobs`` package and add
themselves to it when that package is importable (a repository checkout)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import available_experiments, load_experiment
from .errors import UserError
from .logging_utils import survive_closed_stdout

EXIT_INTERRUPTED = 3  # training stopped by a signal after saving a checkpoint; run again to continue
DESCRIPTION = ("Train, sample and evaluate diffusion (DDPM) and flow-matching models on MNIST, CIFAR-10 and "
               "scikit-learn's digits, here or as SLURM jobs. Each experiment is a file experiments/<name>.yaml; "
               "any of its settings can be overridden on the command line as section.key=value. "
               "Run 'ddpm-hpc COMMAND --help' for the options of one command.")
TRAIN_EXAMPLE = "e.g. train.steps=500"
SAMPLE_EXAMPLE = "e.g. sample.steps=20 sample.seed=7 (sample.* settings)"


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one ``error:`` line and exit code 2, like every other mistake."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def whole(lo: int):
    """argparse type: a whole number >= ``lo``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is too small; must be >= {lo}")
        return value
    return parse


def fid_reference_count(text: str) -> int:
    """0 (all training images) or at least 2: a covariance needs two images."""
    value = whole(0)(text)
    if value == 1:
        raise argparse.ArgumentTypeError("1 is too few; use 0 (all) or at least 2")
    return value


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


def cmd_compare(args) -> int:
    from .report.compare import check_names, default_out_dir, write_comparison

    check_names(args.experiments)
    out = Path(args.out).expanduser() if args.out else default_out_dir(args.experiments)
    try:
        page = write_comparison(args.experiments, out, title=args.title, metric=args.metric)
    except OSError as exc:
        raise UserError(f"could not write the comparison to {out}: {exc.strerror or exc}") from None
    print(f"wrote {page}")
    return 0


def cmd_data(args) -> int:
    from .data import DATASETS, download_dataset

    downloadable = [d for d in DATASETS if d != "digits"]  # digits ships inside scikit-learn
    unknown = [name for name in args.datasets if name not in downloadable]
    if unknown:
        raise UserError(f"ddpm-hpc data: unknown dataset '{unknown[0]}'; choose from {', '.join(downloadable)}")
    for name in args.datasets or downloadable:
        print(f"{name}: ready in {download_dataset(name)}")
    return 0


def eval_options(args) -> dict:
    """The keyword arguments of run_eval / run_eval_sweep from the parsed options (also used by submit-eval)."""
    out = {"n": args.n, "fid_weights": args.fid_weights, "fid_ref_images": args.fid_ref_images, "force": args.force}
    if getattr(args, "samples", None):
        out["samples"] = args.samples
    return out


def parse_grid_items(items: list[str]) -> dict:
    from .sweep import parse_grid

    return parse_grid(items)


def cmd_eval(args) -> int:
    from .metrics.eval import run_eval

    run_eval(load_experiment(args.experiment, args.overrides), **eval_options(args))
    return 0


def cmd_eval_sweep(args) -> int:
    exp = load_experiment(args.experiment, args.overrides)
    grid = parse_grid_items(args.grid)
    from .metrics.eval_sweep import run_eval_sweep

    run_eval_sweep(exp, grid, **eval_options(args))
    return 0


def add_classifier_options(p):
    p.add_argument("--steps", type=whole(1), default=None,
                   help="training steps, at least 1 (default: per dataset)")
    p.add_argument("--seed", type=whole(0), default=0)
    p.add_argument("--force", action="store_true",
                   help="replace an existing classifier (classifier FDs computed with the old one no longer compare)")
    return p


def add_eval_options(p, samples: bool = True, grid: bool = False):
    """The options of eval and eval-sweep, here and as SLURM jobs (submit-eval, submit-eval-sweep)."""
    if grid:
        p.add_argument("--grid", nargs="+", required=True, metavar="sample.key=v1,v2",
                       help="the sample.* settings to vary, e.g. --grid sample.guidance=1,2 sample.steps=4,8")
    p.add_argument("--n", type=whole(2), default=None,
                   help="number of samples, at least 2 (default 1000" + ("; with --samples: all of the file's, or N "
                                                                          "of them taking the classes in turn)"
                                                                          if samples else " per point)"))
    p.add_argument("--fid-weights", help="Inception-v3 weights file (default: $DDPM_HPC_FID_WEIGHTS or data/fid/)")
    p.add_argument("--fid-ref-images", type=fid_reference_count, default=0,
                   help="FID reference: the first N training images, N >= 2 (default 0: all)")
    if samples:
        p.add_argument("--samples", help="score an existing samples/<tag>.safetensors instead of sampling")
    p.add_argument("--force", action="store_true", help="replace an existing eval file of the same name" if not grid
                   else "score every point again, even those an earlier sweep scored with the same settings")
    return p


def cmd_classifier(args) -> int:
    from .distributed import DistContext
    from .metrics.classifier import train_classifier
    from .trainer import resolve_device

    from .data import DATASETS

    dataset = args.dataset
    if dataset not in DATASETS:  # an experiment's name: its dataset
        if dataset not in available_experiments():
            raise UserError(f"ddpm-hpc classifier: {dataset!r} is neither a dataset ({', '.join(DATASETS)}) nor an "
                            f"experiment (make list)")
        dataset = load_experiment(dataset).data.dataset
    device = resolve_device(args.device, DistContext(), "--device")
    clf = train_classifier(dataset, steps=args.steps, seed=args.seed, device=device, force=args.force)
    print(f"wrote {clf.path} (SHA-256 {clf.sha256})")
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
    parser = Parser(prog="ddpm-hpc", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_experiment(p):
        """The experiment and its overrides, with examples that fit the command (also used by the jobs package)."""
        trains = p.prog.split()[-1] in ("train", "submit")
        p.add_argument("experiment", help="experiment name: experiments/<name>.yaml")
        p.add_argument("overrides", nargs="*", default=[], metavar="key.sub=value",
                       help=TRAIN_EXAMPLE if trains else SAMPLE_EXAMPLE)
        return p

    with_experiment(sub.add_parser("train", help="train here, in this process (resumes automatically)")) \
        .set_defaults(func=cmd_train)
    with_experiment(sub.add_parser("sample", help="sample the latest checkpoint and write grids")) \
        .set_defaults(func=cmd_sample)
    p = sub.add_parser("data", help="download datasets into $DDPM_HPC_DATA (run on a machine with internet)")
    # no argparse choices: before Python 3.12 they reject the empty list that means "both" (checked in cmd_data)
    p.add_argument("datasets", nargs="*", metavar="dataset", help="mnist and/or cifar10 (default: both)")
    p.set_defaults(func=cmd_data)
    sub.add_parser("list", help="list experiments").set_defaults(func=cmd_list)
    add_eval_options(with_experiment(sub.add_parser(
        "eval", help="here: score N samples (classifier accuracy and FD, FID when Inception weights are there), "
                     "each distance next to its real-data floor"))).set_defaults(func=cmd_eval)
    add_eval_options(with_experiment(sub.add_parser(
        "eval-sweep", help="here: sample and score every point of a grid of sample.* settings from one checkpoint")),
        samples=False, grid=True).set_defaults(func=cmd_eval_sweep)
    p = sub.add_parser("classifier", help="here: train the small classifier that eval scores samples with")
    p.add_argument("dataset", metavar="dataset|experiment", help="mnist, cifar10, digits, or an experiment's name")
    add_classifier_options(p)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_classifier)
    p = sub.add_parser("sweep-local", help="train, sample (and eval) every member of a sweep here, one after another; "
                                           "run it again to continue")
    from .sweep_local import add_arguments, cmd_sweep_local

    add_arguments(p)
    p.set_defaults(func=cmd_sweep_local)
    p = sub.add_parser("report", help="write experiments/<name>/index.html and experiments/index.html (static HTML)")
    p.add_argument("target", nargs="?", default="all", metavar="EXP|all", help="default: all")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("compare", help="one page comparing experiments: table, loss curves, grids, the best marked")
    p.add_argument("experiments", nargs="+", metavar="EXP", help="two or more experiment names")
    p.add_argument("--out", help="output folder (default: experiments/_compare/<names>/)")
    p.add_argument("--metric", help="rank by fid, classifier_fd, accuracy, loss, img_per_s or compute_hours "
                   "(default: fid, else classifier_fd, else loss: the first every member has)")
    p.add_argument("--title", help="the page's title")
    p.set_defaults(func=cmd_compare)
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
    survive_closed_stdout()
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
