"""``make sweep-local``: a sweep's members trained, sampled (and evaluated) here, one after another. Running it
again continues: a member that is done is skipped, a part-trained one resumes from its checkpoint. The command-line
options that define a sweep are shared with ``make sweep`` (jobs/cli.py)."""

from __future__ import annotations

import shlex

from . import paths
from .checkpoint import newest_file, step_of
from .config import Experiment
from .errors import TrainingDiverged, UserError
from .logging_utils import log
from .sweep import Sweep, load_sweep, sweep_from_grid, with_common
from .sweep_members import Prepared, prepare, write, write_page

EXIT_INTERRUPTED = 3  # as ddpm-hpc train: a member stopped by a signal after saving; run again to continue


def add_arguments(p) -> None:
    p.add_argument("sweep", nargs="?", help="a sweep file: experiments/sweeps/<name>.yaml")
    p.add_argument("--base", metavar="EXP", help="or a command-line sweep over experiments/<EXP>.yaml ...")
    p.add_argument("--grid", action="append", default=[], metavar="'KEY=V1,V2 ...'",
                   help="... with this grid, e.g. 'train.lr=1e-4,3e-4 model.channels=[32,64,64],[64,128,128]'")
    p.add_argument("--name", help="the command-line sweep's name (default: <base>-sweep)")
    p.add_argument("--seeds", type=int, help="the command-line sweep's seeds: train.seed and data.seed 0..N-1")
    p.add_argument("--parallelism", type=int, help="the command-line sweep's slurm.array_parallelism")
    p.add_argument("--list", action="store_true", help="only validate and list the members (writes nothing)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key.sub=value", help="for every member")


def list_members(prepared: Prepared, out=print) -> int:
    """``--list`` (LIST=1): the members, what varies and their overrides; every member validated, nothing written."""
    width = max(len(m.name) for m in prepared.members)
    for member in prepared.members:
        varied = " ".join(f"{k}={v}" for k, v in member.varied_text().items())
        out(f"{member.name:<{width}}  {varied}")
    sweep = prepared.sweep
    out(f"sweep {sweep.name}: {len(prepared.members)} members of {sweep.base}, all valid"
        + (f"; at most {sweep.array_parallelism} at once on SLURM" if sweep.array_parallelism else "")
        + ("; eval after sampling" if sweep.eval is not None else ""))
    return 0


def sweep_from_args(args) -> Sweep:
    overrides = list(args.overrides)
    name = args.sweep
    if name and "=" in name:  # argparse hands the first override to the optional positional
        overrides.insert(0, name)
        name = None
    try:
        grid = [word for text in args.grid for word in shlex.split(text)]
    except ValueError as exc:
        raise UserError(f"GRID: {exc}") from None
    if name and (args.base or grid):
        raise UserError("give a sweep file (SWEEP=<name>) or a base and a grid (EXP=<name> GRID=...), not both")
    if name:
        if args.name or args.seeds or args.parallelism:
            raise UserError(f"NAME, SEEDS and the parallelism of sweep {name} are set in its file")
        return with_common(load_sweep(name), overrides)
    if not args.base:
        raise UserError("which sweep? SWEEP=<name> (experiments/sweeps/<name>.yaml) or EXP=<base> GRID=\"k=v1,v2\"")
    return sweep_from_grid(args.base, grid, args.name, args.seeds, overrides, args.parallelism)


def is_trained(exp: Experiment) -> bool:
    ckpt = newest_file(paths.checkpoint_dir(exp.name))
    return ckpt is not None and step_of(ckpt) >= exp.train.steps


def has_grid(exp: Experiment) -> bool:
    return any((paths.experiment_dir(exp.name) / "samples").glob(f"step{exp.train.steps:07d}-*.png"))


def has_eval(exp: Experiment) -> bool:
    return any((paths.experiment_dir(exp.name) / "eval").glob(f"fresh-step{exp.train.steps:07d}-*.json"))


def run_sweep_local(prepared: Prepared, log_fn=log) -> int:
    from .pipeline import run_sampling, run_training

    sweep = prepared.sweep
    write(prepared)
    write_page(sweep.name, log_fn)
    diverged = []
    for i, (member, exp) in enumerate(prepared.pairs(), 1):
        done = is_trained(exp) and has_grid(exp) and (sweep.eval is None or has_eval(exp))
        log_fn(f"sweep {sweep.name} [{i}/{len(prepared.members)}] {member.name}" + (": done" if done else ""))
        if done:
            continue
        try:
            outcome = run_training(exp, log_fn=log_fn)
            if outcome.status != "finished":
                log_fn(f"sweep {sweep.name} stopped at member {member.name} (step {outcome.step} saved); run the "
                       f"same command again to continue")
                return EXIT_INTERRUPTED
            if not has_grid(exp):
                run_sampling(exp, log_fn)
            if sweep.eval is not None and not has_eval(exp):
                from .metrics.eval import run_eval

                run_eval(exp, n=sweep.eval.get("n"), fid_ref_images=sweep.eval.get("fid_ref_images", 0), log_fn=log_fn)
        except TrainingDiverged as exc:  # e.g. the largest learning rate of the grid: the others still run
            log_fn(f"member {member.name} diverged: {exc}")
            diverged.append(member.name)
        except UserError as exc:
            raise type(exc)(f"sweep {sweep.name}, member {member.name}: {exc}") from None
        write_page(sweep.name, log_fn)
    page = write_page(sweep.name, log_fn)
    log_fn(f"sweep {sweep.name}: {len(prepared.members) - len(diverged)} of {len(prepared.members)} members done"
           + (f"; diverged: {', '.join(diverged)}" if diverged else "") + (f"; open {page}" if page else ""))
    return TrainingDiverged.exit_code if diverged else 0


def cmd_sweep_local(args) -> int:
    prepared = prepare(sweep_from_args(args))
    return list_members(prepared) if args.list else run_sweep_local(prepared)
