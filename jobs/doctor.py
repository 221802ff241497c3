"""``ddpm-hpc doctor`` / ``make doctor [EXP=name] [SUBMIT=1]``: one screen saying whether this machine, the cluster and
an experiment's ``slurm:`` settings fit together, each line ok / WARNING / PROBLEM with what to change.

On the login node: the torch build and the GPUs it sees (:mod:`jobs.doctor_host`), the SLURM version, the
partitions this user can submit to and whether the ``slurm:`` settings fit them (:mod:`jobs.doctor_slurm`), the
filesystems under the checkpoint and experiment roots, and the datasets on disk. ``--submit`` also sends a short
probe job with the experiment's settings (:mod:`jobs.doctor_probe`) and prints what it found on a compute node.
Everything goes to ``experiments/_doctor/<time>.json`` (the probe writes ``<time>-probe.json`` itself).

Exit status: 0 without problems (warnings allowed, e.g. no SLURM or no GPU here), 1 with at least one problem.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ddpm_hpc.config import load_experiment
from ddpm_hpc.config_files import available_experiments
from ddpm_hpc.errors import ConfigError, UserError

from . import doctor_fit, doctor_host, doctor_probe, doctor_slurm, registry, slurm
from .doctor_probe_checks import probe_checks
from .doctor_report import PROBLEM, Check, as_json, doctor_dir, new_stamp, ok, problem, read_json, summary, \
    warning, write_json
from .executor import check_slurm_config, sbatch_parameters
from .submit import _display

DEFAULT_EXPERIMENT = "demo"  # small model, digits (ships with scikit-learn): a probe that always has its data
PROBE_TIME_MIN = 10
POLL_S = 2.0
PROGRESS_S = 15.0


def default_experiment() -> str:
    names = available_experiments()
    if DEFAULT_EXPERIMENT in names or not names:
        return DEFAULT_EXPERIMENT
    return names[0]


def _slurm_summary(exp) -> str:
    s = exp.slurm
    return (f"partition {s.partition}, qos {s.qos or '-'}, gres {s.gres or '-'}, {s.gpus_per_node} GPU(s)/node, "
            f"time {s.time_min} min, {s.mem_gb:g} GB, {s.cpus_per_task} CPUs")


def login_checks(exp, on_cluster: bool, facts: dict) -> list[Check]:
    """Every check of the login node; ``facts`` collects what was read, for the JSON file."""
    from ddpm_hpc import devices

    build, gpus = devices.torch_build(), devices.gpu_report()
    facts.update(torch=build, gpus=gpus)
    checks = doctor_host.torch_checks(build, gpus, on_cluster)
    if on_cluster:
        cluster = doctor_slurm.gather()
        facts["slurm"] = cluster.to_json()
        if cluster.partitions is None:
            why = next(iter(cluster.errors.values()), "?")
            checks.append(problem("SLURM", f"sbatch is here but the controller does not answer: {why}",
                                  "check SLURM_CONF, try again later, or ask the admins"))
        else:
            checks.append(ok("SLURM", cluster.version or "version unknown"))
            groups, is_root = doctor_slurm.user_groups(), os.geteuid() == 0
            checks += doctor_fit.partition_lines(cluster, groups, is_root)
            checks += doctor_fit.fit_checks(exp, cluster, groups, is_root, build.get("arch_list") or [],
                                              devices.runs_on)
            pre = doctor_fit.preemption_check(cluster.config)
            checks += [pre] if pre else []
    else:
        missing = " and ".join(slurm.missing_submit_commands())
        checks.append(warning("SLURM", f"{missing} not found: not a SLURM login node, so the cluster checks are "
                                       f"skipped", f"on this machine train with make local EXP={exp.name}"))
    try:
        check_slurm_config(exp)  # what make submit would refuse
    except ConfigError as exc:
        checks.append(problem("slurm settings", str(exc)))
    checks += doctor_host.storage_checks(on_cluster)
    checks += doctor_host.dataset_checks(exp)
    return checks


def run_doctor(name: str | None, overrides: list[str], submit: bool = False, wait_min: float = 30.0,
               out=print) -> int:
    if wait_min < 0:
        raise UserError(f"--wait {wait_min:g}: minutes to wait for the probe must be 0 or more")
    name = name or default_experiment()
    exp = load_experiment(name, overrides)
    on_cluster = not slurm.missing_submit_commands()
    out(f"ddpm-hpc doctor on {socket.gethostname()}: experiment {exp.name} ({_slurm_summary(exp)})")
    facts: dict = {}
    checks = login_checks(exp, on_cluster, facts)
    for check in checks:
        out(check.line())
    folder = doctor_dir()
    stamp = new_stamp(folder)
    report = {"stamp": stamp, "created": registry.now(), "host": socket.gethostname(),
              "experiment": exp.name, "overrides": list(overrides), "slurm_settings": dict(vars(exp.slurm)),
              "checks": as_json(checks), "facts": facts, "probe": None}
    path = write_json(folder / f"{stamp}.json", report)
    if submit:
        probe = run_probe(exp, on_cluster, folder / f"{stamp}-probe.json", wait_min, out)
        report["probe"] = probe
        for check in (Check(**c) for c in probe["checks"]):
            out(check.line())
            checks.append(check)
        write_json(path, report)
    out(f"{summary(checks)}; written to {_display(path)}")
    return 1 if any(c.status == PROBLEM for c in checks) else 0


# -- the probe job --------------------------------------------------------------------------------------------------
def probe_parameters(exp) -> dict:
    """The sampling job's parameters (one task, at most one GPU of the experiment's gres), a short time limit, no
    requeue: a probe that is pre-empted is simply gone."""
    params = sbatch_parameters(exp, "sample")
    minutes = min(exp.slurm.time_min, PROBE_TIME_MIN)
    delay = min(params["signal_delay_s"], minutes * 20)  # a time-limit warning must not come before the probe ends
    params.update(job_name="ddpm-doctor", time=minutes, signal_delay_s=delay)
    extra = {k: v for k, v in params["additional_parameters"].items() if k != "requeue"}
    extra["no_requeue"] = True  # also where JobRequeue=1 makes jobs requeueable by default
    if "signal" in extra:  # a pinned --signal=SIG@N line: same signal, the probe's delay
        extra["signal"] = f"{str(extra['signal']).split('@')[0]}@{delay}"
    params["additional_parameters"] = extra
    return params


def submit_probe(exp, answer: Path, folder: Path):
    import submitit
    from submitit.core.utils import FailedJobError

    from .tasks import current_roots

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(**probe_parameters(exp))
    try:
        return executor.submit(doctor_probe.DoctorProbe(exp.to_json(), current_roots(), str(answer)))
    except (RuntimeError, OSError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        reason = next((ln for ln in lines if "error" in ln.lower()), lines[-1]) if isinstance(exc, FailedJobError) \
            else lines[0]
        raise UserError(f"sbatch refused the probe job: {reason}") from None


def _queue_state(job_id: str) -> str | None:
    """``RUNNING`` / ``PENDING (Priority)`` while squeue lists the job, None once it has left the queue."""
    try:
        text = slurm._run(["squeue", "-h", "-j", job_id, "-o", "%T|%r"], timeout=20).strip()
    except slurm.SlurmUnavailable:
        return None  # "Invalid job id specified": finished and purged
    if not text:
        return None
    state, _, reason = text.splitlines()[0].partition("|")
    return state if reason in ("", "None") else f"{state} ({reason})"


def wait_for_answer(job_id: str, answer: Path, timeout_s: float, out, poll_s: float = POLL_S,
                    grace_s: float = 10.0) -> tuple[dict | None, str | None]:
    """Poll the probe's answer file and the queue until the answer is complete, the job has left the queue (plus
    ``grace_s`` for a shared filesystem to show the file) or ``timeout_s`` has passed.
    Returns (the answer as read last, or None; the job's queue state if it is still queued, else None)."""
    start, said, last, gone_since = time.monotonic(), 0.0, "", None
    while True:
        data = read_json(answer)
        if data and data.get("complete"):
            return data, None
        state = _queue_state(job_id)
        waited = time.monotonic() - start
        if state != last or waited - said >= PROGRESS_S:
            out(f"  probe job {job_id}: {state or 'left the queue'} ({int(waited) // 60}:{int(waited) % 60:02d})")
            said, last = waited, state
        if state is None:  # ended: allow a shared filesystem a few seconds to show the file
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > grace_s:
                return data, None
        if waited > timeout_s:
            return data, state
        time.sleep(poll_s)


def run_probe(exp, on_cluster: bool, answer: Path, wait_min: float, out) -> dict:
    if not on_cluster:
        missing = " and ".join(slurm.missing_submit_commands())
        return {"job_id": None, "answer_file": None, "answer": None, "checks": as_json(
            [warning("probe", f"not submitted: {missing} not found (not a SLURM login node)")])}
    logs = answer.parent / "logs"
    try:
        job = submit_probe(exp, answer, logs)
    except UserError as exc:
        return {"job_id": None, "answer_file": None, "answer": None, "checks": as_json([problem("probe", str(exc))])}
    job_id = str(job.job_id)
    out(f"submitted probe job {job_id} ({probe_parameters(exp)['time']} min limit); waiting up to {wait_min:g} min "
        f"(Ctrl-C stops waiting; the job still writes {_display(answer)})")
    try:
        data, still = wait_for_answer(job_id, answer, wait_min * 60, out)
    except KeyboardInterrupt:  # stop waiting, keep the job: its answer file still comes
        data, still = read_json(answer), "queued or running (stopped waiting)"
        data = data if data and data.get("complete") else None
    checks = answer_checks(exp, job_id, data, still, logs, answer)
    return {"job_id": job_id, "answer_file": str(answer), "answer": data, "checks": as_json(checks)}


def answer_checks(exp, job_id: str, data: dict | None, still: str | None, logs: Path, answer: Path):
    if data is None and still:
        return [warning("probe", f"job {job_id} is still {still}: its answers will be in {_display(answer)}",
                        f"read that file later, or scancel {job_id}")]
    if data is None or not data.get("complete"):
        tail = _log_tail(logs, job_id)
        log, ends = f"see {_display(logs)}/{job_id}_0_log.err", f"; its log ends: {tail}" if tail else ""
        if data is None:
            head = problem("probe", f"job {job_id} ended without an answer{ends}",
                           f"{log}; is {_display(answer.parent)} on a filesystem the compute nodes share?")
        elif data.get("stage") == "USR2 self-test":
            head = problem("pre-emption warning", f"job {job_id} died when it sent itself USR2: the signal killed the "
                                                  f"job instead of reaching the Python process"
                           + (f" (log: {tail})" if tail else ""),
                           f"{log}; Python must run as the srun step (no `exec` in slurm.setup, no wrapper)")
        else:
            head = problem("probe", f"job {job_id} ended during the {data.get('stage')}{ends}", log)
        return [head] + (probe_checks(exp, data) if data else [])
    return probe_checks(exp, data)


def _log_tail(logs: Path, job_id: str) -> str:
    for suffix in ("err", "out"):
        try:
            lines = [ln for ln in (logs / f"{job_id}_0_log.{suffix}").read_text().splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            return lines[-1].strip()[:200]
    return ""

