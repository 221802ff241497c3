"""``ddpm-hpc submit | submit-sample | submit-eval | submit-eval-sweep | status | logs | cancel | sweep``: registered
into ddpm_hpc.cli when this package is importable (a repo checkout). Imports stay inside the commands so
``ddpm-hpc --help`` stays fast."""

from __future__ import annotations


def cmd_submit(args) -> int:
    from .submit import submit_training

    submit_training(args.experiment, args.overrides, force=args.force)
    return 0


def cmd_submit_sample(args) -> int:
    from .submit import submit_sampling

    submit_sampling(args.experiment, args.overrides)
    return 0


def cmd_submit_eval(args) -> int:
    from ddpm_hpc.cli import eval_options, parse_grid_items

    from .submit_eval import submit_eval

    grid = parse_grid_items(args.grid) if getattr(args, "grid", None) else None
    submit_eval(args.experiment, args.overrides, eval_options(args), grid)
    return 0


def cmd_submit_classifier(args) -> int:
    from .submit_eval import submit_classifier

    submit_classifier(args.experiment, {"steps": args.steps, "seed": args.seed, "force": args.force})
    return 0


def cmd_status(args) -> int:
    if args.sweep:
        from .sweep_status import sweep_status

        if args.experiment:
            raise _both()
        return sweep_status(args.sweep)
    from .status import status

    return status([args.experiment] if args.experiment else [])


def _both():
    from ddpm_hpc.errors import UserError

    return UserError("give EXP=<name> or SWEEP=<name>, not both")


def cmd_sweep(args) -> int:
    from ddpm_hpc.sweep_local import list_members, sweep_from_args
    from ddpm_hpc.sweep_members import prepare

    from .sweep import submit_sweep

    if args.list:
        return list_members(prepare(sweep_from_args(args)))
    submit_sweep(sweep_from_args(args), force=args.force)
    return 0


def cmd_logs(args) -> int:
    from .status import show_logs

    return show_logs(args.experiment, args.job, args.lines, args.follow, rank=args.rank)


def cmd_cancel(args) -> int:
    if args.sweep:
        from .sweep import cancel_sweep

        if args.experiment:
            raise _both()
        cancel_sweep(args.sweep)
        return 0
    from .submit import cancel

    if not args.experiment:
        from ddpm_hpc.errors import UserError

        raise UserError("cancel what? ddpm-hpc cancel <experiment> or --sweep <name>")
    cancel(args.experiment)
    return 0


def register(sub, with_experiment) -> None:
    p = with_experiment(sub.add_parser(
        "submit", help="SLURM: submit training, then a sampling job that runs after it succeeds"))
    p.add_argument("--force", action="store_true",
                   help="cancel this experiment's live jobs first (the new job starts after they have exited)")
    p.set_defaults(func=cmd_submit)
    with_experiment(sub.add_parser(
        "submit-sample", help="SLURM: submit a sampling job alone (e.g. sample.sampler=ddim sample.steps=50)")) \
        .set_defaults(func=cmd_submit_sample)
    from ddpm_hpc.cli import add_classifier_options, add_eval_options

    add_eval_options(with_experiment(sub.add_parser(
        "submit-eval", help="SLURM: make eval as a job (the eval file is written by the job)"))) \
        .set_defaults(func=cmd_submit_eval)
    add_eval_options(with_experiment(sub.add_parser(
        "submit-eval-sweep", help="SLURM: make eval-sweep as one job (all points, one checkpoint)")),
        samples=False, grid=True).set_defaults(func=cmd_submit_eval)
    p = sub.add_parser("submit-classifier", help="SLURM: train the classifier of the experiment's dataset as a job")
    p.add_argument("experiment", help="its dataset, slurm settings and jobs.json are used")
    add_classifier_options(p)
    p.set_defaults(func=cmd_submit_classifier)
    p = sub.add_parser("status", help="SLURM: one line per submitted experiment (jobs, state, step, loss, ETA)")
    p.add_argument("experiment", nargs="?", help="default: every experiment with submitted jobs")
    p.add_argument("--sweep", help="one line per member of this sweep, and a summary line")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("logs", help="SLURM: tail of the current job's stdout and stderr")
    p.add_argument("experiment")
    p.add_argument("--job", help="job id (default: the latest job that has started)")
    p.add_argument("-n", "--lines", type=int, default=40)
    p.add_argument("-f", "--follow", action="store_true", help="keep following (tail -F)")
    p.add_argument("--rank", type=int, default=0, help="which rank's logs, for multi-GPU jobs (default: 0)")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("cancel", help="SLURM: cancel the experiment's live jobs (training saves a checkpoint first)")
    p.add_argument("experiment", nargs="?")
    p.add_argument("--sweep", help="cancel the live jobs of every member of this sweep")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("sweep", help="SLURM: a sweep's members as job arrays (training, then sampling per member)")
    from ddpm_hpc.sweep_local import add_arguments

    add_arguments(p)
    p.add_argument("--force", action="store_true", help="cancel the members' live jobs first")
    p.set_defaults(func=cmd_sweep)
