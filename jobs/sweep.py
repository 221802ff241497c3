"""``make sweep``: a sweep's members as SLURM job arrays, run on the login node.

One array trains every member (task i = member i, the ordinary :class:`TrainJob`: it saves and requeues itself on
USR2, ``scontrol requeue <array>_<i>`` requeues that task only). A sampling array of the same size follows with
``--dependency=aftercorr:<training array>``: sampling task i starts when training task i has succeeded, so a failed
member holds back nobody else (``--kill-on-invalid-dep`` ends its sampling task). An eval array (``eval:`` in the
sweep) follows the sampling array the same way. ``slurm.array_parallelism`` caps how many tasks of each array run at
once (``--array=0-N%K``).

Every member is an ordinary experiment: its jobs are recorded in its own ``jobs.json`` (ids ``<array>_<i>``) and its
own ``logs/events.jsonl``, so ``make status|cancel|logs EXP=<member>`` work as for one experiment. submitit writes an
array's logs into one folder, ``experiments/<sweep>/logs/``; each member's ``logs/`` gets relative links to its own.
"""

from __future__ import annotations

from pathlib import Path

from ddpm_hpc import paths
from ddpm_hpc.errors import ConfigError, UserError
from ddpm_hpc.sweep_local import is_trained as trained
from ddpm_hpc.sweep_members import Prepared, member_names, prepare, write, write_page

from . import registry, slurm
from .executor import check_slurm_config, sbatch_parameters, world_size
from .submit import (_cancel, _display, _entry, _require_slurm, _step_delay, check_checkpoint_matches, submit_with,
                     warn_missing_data, write_snapshot)
from .sweep_tasks import EvalJob, SweepSampleJob
from .tasks import TrainJob, current_roots


def check_same_resources(prepared: Prepared) -> None:
    """An array has one sbatch script: every member must ask for the same resources."""
    first_member, first = prepared.members[0], prepared.experiments[0]
    for kind in ("train", "sample"):
        ref = {k: v for k, v in sbatch_parameters(first, kind).items() if k != "job_name"}
        for member, exp in prepared.pairs()[1:]:
            ours = {k: v for k, v in sbatch_parameters(exp, kind).items() if k != "job_name"}
            if ours != ref:
                key = next(k for k in sorted(set(ref) | set(ours)) if ref.get(k) != ours.get(k))
                raise ConfigError(f"sweep {prepared.sweep.name}, member {member.name}: its {kind} job asks for "
                                  f"{key}={ours.get(key)!r} but {first_member.name} for {ref.get(key)!r}; one job "
                                  f"array has one set of resources: vary slurm.* settings in separate sweeps")


def check_array_size(sweep_name: str, count: int) -> None:
    try:
        limit = slurm.max_array_size()
    except slurm.SlurmUnavailable as exc:
        raise UserError(f"cannot read the cluster's MaxArraySize: {exc}") from None
    if count > limit:
        raise ConfigError(f"sweep {sweep_name}: {count} members to train, but this cluster's MaxArraySize is {limit} "
                          f"(scontrol show config); split the sweep (fewer values or seeds)")


def live_by_member(names: list[str]) -> dict[str, list[dict]]:
    """Registered jobs of each member that squeue still lists (one squeue call for the whole sweep)."""
    try:
        queue = slurm.squeue_mine()
    except slurm.SlurmUnavailable as exc:
        raise UserError(f"cannot check for live jobs: {exc}") from None
    out = {}
    for name in names:
        live = [dict(j, state=queue[str(j["job_id"])].state) for j in registry.load(name)
                if str(j["job_id"]) in queue]
        if live:
            out[name] = live
    return out


def link_logs(sweep_name: str, member: str, job_id: str, ranks: int) -> None:
    """``experiments/<member>/logs/<job>_<rank>_log.out|err`` -> the array's log in ``experiments/<sweep>/logs``
    (relative links: they resolve wherever both folders are, e.g. after make pull EXP=<sweep>)."""
    folder = registry.logs_dir(member)
    folder.mkdir(parents=True, exist_ok=True)
    for rank in range(ranks):
        for ext in ("out", "err"):
            name = f"{job_id}_{rank}_log.{ext}"
            link = folder / name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(Path("..", "..", sweep_name, "logs", name))


def _ids(jobs) -> tuple[str, list[str]]:
    """(the array's id, each task's id) of submitit's jobs; a one-member sweep is a plain job."""
    ids = [str(j.job_id) for j in jobs]
    return ids[0].split("_")[0], ids


def _submit_array(prepared: Prepared, kind: str, dependency: str | None, calls: list) -> tuple[str, list[str]]:
    sweep = prepared.sweep
    exp = prepared.experiments[0]
    k = sweep.array_parallelism or len(calls)
    what = {"train": "training", "sample": "sampling", "eval": "eval"}[kind]
    jobs = submit_with(exp, "train" if kind == "train" else "sample", registry.logs_dir(sweep.name), dependency,
                       lambda executor: executor.submit_array(calls), what=f"{what} array",
                       array_parallelism=k, job_name=f"ddpm-{sweep.name}" + ("" if kind == "train" else f"-{kind}"))
    return _ids(jobs)


def _after(array_id: str, ids: list[str]) -> str:
    return f"aftercorr:{array_id}" if "_" in ids[0] else f"afterok:{array_id}"


def submit_sweep(sweep, force: bool = False, out=print) -> dict[str, list[str]]:
    """Validate every member, then submit the training, sampling (and eval) arrays; returns each array's task ids."""
    prepared = prepare(sweep)
    for exp in prepared.experiments:
        check_slurm_config(exp)
        check_checkpoint_matches(exp)
    check_same_resources(prepared)
    _require_slurm(f"use make sweep-local SWEEP={sweep.name} here")
    names = [m.name for m in prepared.members]
    live = live_by_member(names)
    after = None
    if live:
        listing = "; ".join(f"{n}: " + ", ".join(f"{j['kind']} {j['job_id']} ({j['state']})" for j in jobs)
                            for n, jobs in live.items())
        if not force:
            raise UserError(f"sweep {sweep.name} has live jobs ({listing}); wait (make status SWEEP={sweep.name}), "
                            f"make cancel SWEEP={sweep.name}, or add FORCE=1 to cancel them and submit")
    todo = [(m, e) for m, e in prepared.pairs() if not trained(e)]
    check_array_size(sweep.name, len(todo))
    warn_missing_data(prepared.experiments[0])
    if live:
        cancelled = [i for n, jobs in live.items() for i in _cancel(n, jobs, "make sweep FORCE=1")]
        after = "afterany:" + ":".join(cancelled)
        out(f"cancelled {len(cancelled)} live job(s) of the sweep; its arrays start after they have exited")
    done = [m.name for m, e in prepared.pairs() if trained(e)]
    if not todo:
        write(prepared)
        write_page(sweep.name, out)
        out(f"sweep {sweep.name}: all {len(names)} members are trained; nothing submitted (make sample EXP=<member> "
            f"samples one again)")
        return {}
    todo_prepared = Prepared(sweep, [m for m, _ in todo], [e for _, e in todo])
    roots, delay = current_roots(), _step_delay()
    train_calls = [TrainJob(e.to_json(), roots, e.slurm.max_requeues, delay) for _, e in todo]
    train_array, train_ids = _submit_array(todo_prepared, "train", after, train_calls)
    write(prepared)  # only now: a refused array leaves nothing behind
    for (member, exp), job_id in zip(todo, train_ids):
        registry.add(member.name, dict(_entry(job_id, "train", list(member.overrides), exp, after), sweep=sweep.name,
                                       array=train_array))
        write_snapshot(exp, [])  # experiments/<member>.yaml holds the member's settings
        link_logs(sweep.name, member.name, job_id, world_size(exp))
    arrays = {"train": train_ids}
    later = [("sample", [SweepSampleJob(e.to_json(), roots, e.slurm.max_requeues, sweep.name) for _, e in todo])]
    if sweep.eval is not None:
        later.append(("eval", [EvalJob(e.to_json(), roots, e.slurm.max_requeues, sweep.name, sweep.eval)
                               for _, e in todo]))
    previous_array, previous_ids = train_array, train_ids
    for kind, calls in later:
        dependency = _after(previous_array, previous_ids)
        try:
            array_id, ids = _submit_array(todo_prepared, kind, dependency, calls)
        except UserError as exc:
            raise UserError(f"the training array {train_array} of sweep {sweep.name} is submitted, but {exc}; "
                            f"make sample EXP=<member> submits one member's sampling job") from None
        for (member, exp), job_id in zip(todo, ids):
            registry.add(member.name, dict(_entry(job_id, kind, list(member.overrides), exp, dependency),
                                           sweep=sweep.name, array=array_id))
            link_logs(sweep.name, member.name, job_id, 1)
        arrays[kind] = ids
        previous_array, previous_ids = array_id, ids
    write_page(sweep.name, out)
    _report(prepared, todo, done, arrays, out)
    return arrays


def _report(prepared: Prepared, todo, done: list[str], arrays: dict, out) -> None:
    sweep = prepared.sweep
    first = arrays["train"][0].split("_")[0]
    cap = f", at most {sweep.array_parallelism} at once" if sweep.array_parallelism else ""
    kinds = ", ".join(f"{kind} array {ids[0].split('_')[0]}" for kind, ids in arrays.items() if kind != "train")
    out(f"submitted sweep {sweep.name}: {len(todo)} members, training array {first} ({todo[0][1].train.steps} steps "
        f"each{cap}, partition {todo[0][1].slurm.partition}); {kinds} (each member's after its own training)")
    for (member, _), job_id in zip(todo, arrays["train"]):
        out(f"  {job_id:<12} {member.name}")
    if done:
        out(f"  already trained, not submitted: {', '.join(done)}")
    out(f"  follow:  make status SWEEP={sweep.name}    make logs EXP=<member>    stop: make cancel SWEEP={sweep.name}")
    out(f"  results: {_display(paths.experiment_dir(sweep.name) / 'index.html')} (make pull EXP={sweep.name} on "
        f"your laptop)")


def cancel_sweep(sweep_name: str, out=print) -> list[str]:
    names = member_names(sweep_name)
    live = live_by_member(names)
    if not live:
        out(f"sweep {sweep_name}: no live jobs")
        return []
    ids = [str(j["job_id"]) for jobs in live.values() for j in jobs]
    try:
        slurm.scancel(ids)  # one call for the whole sweep
    except slurm.SlurmUnavailable as exc:
        raise UserError(f"could not cancel the jobs of sweep {sweep_name}: {exc}") from None
    for name, jobs in live.items():
        registry.mark_cancelled(name, [str(j["job_id"]) for j in jobs], "make cancel")
    out(f"cancelled {len(ids)} job(s) of {len(live)} member(s) of sweep {sweep_name} (running training tasks save a "
        f"checkpoint first; the same make sweep command again continues them)")
    return ids

