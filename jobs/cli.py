"""``ddpm-hpc submit | submit-sample | status | logs | cancel``: registered into ddpm_hpc.cli when this package is
importable (a repo checkout). Imports stay inside the commands so ``ddpm-hpc --help`` stays fast."""

from __future__ import annotations


def cmd_submit(args) -> int:
    from .submit import dry_run_training, submit_training

    if args.dry_run:
        dry_run_training(args.experiment, args.overrides, force=args.force)
    else:
        submit_training(args.experiment, args.overrides, force=args.force)
    return 0


def cmd_submit_sample(args) -> int:
    from .submit import dry_run_sampling, submit_sampling

    if args.dry_run:
        dry_run_sampling(args.experiment, args.overrides)
    else:
        submit_sampling(args.experiment, args.overrides)
    return 0


DRY_RUN_HELP = "print the sbatch script(s) that would be submitted; submit nothing, write nothing (no SLURM needed)"


def cmd_status(args) -> int:
    from .status import status

    return status([args.experiment] if args.experiment else [])


def cmd_logs(args) -> int:
    from .status import show_logs

    return show_logs(args.experiment, args.job, args.lines, args.follow, rank=args.rank)


def cmd_cancel(args) -> int:
    from .submit import cancel

    cancel(args.experiment)
    return 0


def register(sub, with_experiment) -> None:
    p = with_experiment(sub.add_parser(
        "submit", help="SLURM: submit training, then a sampling job that runs after it succeeds"))
    p.add_argument("--force", action="store_true",
                   help="cancel this experiment's live jobs first (the new job starts after they have exited)")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(func=cmd_submit)
    p = with_experiment(sub.add_parser(
        "submit-sample", help="SLURM: submit a sampling job alone (e.g. sample.sampler=ddim sample.steps=50)"))
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(func=cmd_submit_sample)
    p = sub.add_parser("status", help="SLURM: one line per submitted experiment (jobs, state, step, loss, ETA)")
    p.add_argument("experiment", nargs="?", help="default: every experiment with submitted jobs")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("logs", help="SLURM: tail of the current job's stdout and stderr")
    p.add_argument("experiment")
    p.add_argument("--job", help="job id (default: the latest job that has started)")
    p.add_argument("-n", "--lines", type=int, default=40)
    p.add_argument("-f", "--follow", action="store_true", help="keep following (tail -F)")
    p.add_argument("--rank", type=int, default=0, help="which rank's logs, for multi-GPU jobs (default: 0)")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("cancel", help="SLURM: cancel the experiment's live jobs (training saves a checkpoint first)")
    p.add_argument("experiment")
    p.set_defaults(func=cmd_cancel)
