"""Pending reasons that waiting does not clear, and what to change: ``make status`` says
``will not start: <reason>: <what to change>`` instead of leaving a job in the queue forever.

:func:`never_starts` is pure (squeue's ``%r`` reason, plus what ``scontrol show job``, ``scontrol show partition`` and
``sinfo`` said, when known); :func:`explain_pending` gathers those facts for one job and degrades to the generic
advice when a command does not answer.
"""

from __future__ import annotations

import re

from .partition import parse_minutes, parse_scontrol_records, partition_limits
from .slurm import SlurmUnavailable, _run

# Node states in which a node takes no new job until someone acts (sinfo %T, without the */~/#/... suffixes).
NODE_OUT = {"down", "drained", "draining", "drain", "fail", "failing", "inval", "future", "unknown"}
# Slurm's per-job limits of a QOS or an association: this request alone is over them, so waiting never helps.
_PER_JOB = re.compile(r"^(Assoc|QOS)Max\w*(PerJob|PerNode)\w*$")
# Usage budgets (GrpTRESMins): they do not refill by waiting. GrpTRESRunMins (RunMinutes) does, as jobs run.
_BUDGET = re.compile(r"^(Assoc|QOS)Grp(?!\w*RunMinutes)\w*Minutes\w*$")


def _code(reason: str) -> tuple[str, str]:
    """``ReqNodeNotAvail, UnavailableNodes:c[1-2]`` -> (``ReqNodeNotAvail``, ``UnavailableNodes:c[1-2]``)."""
    code, _, rest = reason.strip().strip("()").partition(",")
    return code.strip(), rest.strip()


def unavailable_nodes(reason: str) -> str:
    """The hostlist of ``ReqNodeNotAvail, UnavailableNodes:<hostlist>`` ('' when it names none)."""
    _, rest = _code(reason)
    return rest.split(":", 1)[1].strip() if rest.startswith("UnavailableNodes:") else ""


def parse_node_states(text: str) -> dict[str, str]:
    """``sinfo -h -N -o '%N|%T'`` lines -> {node: state}, the state without its flag suffixes (``down*`` -> down)."""
    states = {}
    for line in text.splitlines():
        node, _, state = line.strip().partition("|")
        if node and state:
            states[node] = re.sub(r"[*~#!%$@^+-]+$", "", state.strip().lower())
    return states


def never_starts(reason: str, name: str, job: dict | None = None, partition: dict | None = None,
                 node_states: dict[str, str] | None = None) -> str | None:
    """``will not start: <reason>: <what to change>`` for a pending reason that waiting does not clear, else None.

    ``job``: the job's ``scontrol show job`` record; ``partition``: :func:`jobs.partition.partition_limits` of its
    partition; ``node_states``: sinfo's state of the nodes the reason names. Each makes the advice more exact.
    """
    code, _ = _code(reason)
    job = job or {}
    part = job.get("Partition") or (partition or {}).get("name") or "its partition"
    again = f"make cancel EXP={name}, then make submit EXP={name}"

    def with_fix(fix: str) -> str:
        return f'{again} SET="{fix}"'
    if code == "PartitionTimeLimit":
        asked = parse_minutes(job["TimeLimit"]) if job.get("TimeLimit") else None
        most = (partition or {}).get("max_time_min")
        what = (f"its time limit ({asked} min) is above partition {part}'s MaxTime ({most} min)"
                if asked is not None and most is not None else f"its time limit is above partition {part}'s MaxTime")
        fix = f"slurm.time_min={most}" if most is not None else "slurm.time_min=<at most MaxTime>"
        return f"will not start: {code}: {what}; {with_fix(fix)} (or another slurm.partition)"
    if code == "PartitionNodeLimit":
        return (f"will not start: {code}: its node count is outside partition {part}'s MinNodes..MaxNodes; "
                f"{with_fix('slurm.nodes=<fewer>')} (or another slurm.partition)")
    if code in ("QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit"):
        who = "QOS" if code.startswith("QOS") else "association"
        return (f"will not start: {code}: its time limit is above the {who}'s MaxWall (sacctmgr show "
                f"{'qos format=Name,MaxWall' if who == 'QOS' else 'assoc user=$USER format=Account,QOS,MaxWall'}); "
                f"{with_fix('slurm.time_min=<lower>')} or another slurm.qos")
    if _PER_JOB.match(code):
        who = "QOS" if code.startswith("QOS") else "association"
        return (f"will not start: {code}: the job asks for more than its {who} allows one job (sacctmgr show "
                f"{'qos format=Name,MaxTRESPerJob,MaxTRESPerNode' if who == 'QOS' else 'assoc user=$USER'}); "
                f"ask for less (slurm.gpus_per_node, slurm.nodes, slurm.cpus_per_task, slurm.mem_gb) or use another "
                f"slurm.qos: {again}")
    if _BUDGET.match(code):
        return (f"will not start: {code}: the account's usage budget (GrpTRESMins) is used up and does not refill "
                f"by waiting; ask the admins, or use another slurm.account or slurm.qos: {again}")
    if code == "BadConstraints":
        return (f"will not start: {code}: no node of partition {part} has what the job asks for (features, memory, "
                f"CPUs, gres: sinfo -p {part} -o '%N %f %G %m %c'); change slurm.additional/constraint, "
                f"slurm.mem_gb, slurm.cpus_per_task or slurm.gres: {again}")
    if code in ("InvalidQOS", "InvalidAccount", "QOSNotAllowed"):
        return (f"will not start: {code}: the job's QOS or account is not open to you (sacctmgr show assoc "
                f"user=$USER format=Account,QOS); change slurm.qos or slurm.account: {again}")
    if code == "DependencyNeverSatisfied":
        return (f"will not start: {code}: the job it waits for did not succeed; make cancel EXP={name}, then "
                f"make submit EXP={name} (or make sample EXP={name} once there is a checkpoint)")
    if code == "ReqNodeNotAvail" and node_states:
        out = sorted(node for node, state in node_states.items() if state in NODE_OUT)
        if out and len(out) == len(node_states):
            listing = ", ".join(f"{n} {node_states[n]}" for n in out)
            return (f"will not start: {code}: the nodes it needs are out of service ({listing}) and come back only "
                    f"when an admin resumes them; make cancel EXP={name}, then submit to another slurm.partition "
                    f"(or without the node list in slurm.additional)")
    return None


def is_candidate(reason: str) -> bool:
    """Whether :func:`never_starts` may answer for this reason (so that status only asks scontrol when it might)."""
    code, _ = _code(reason)
    return code in ("PartitionTimeLimit", "PartitionNodeLimit", "QOSMaxWallDurationPerJobLimit",
                    "AssocMaxWallDurationPerJobLimit", "BadConstraints", "InvalidQOS", "InvalidAccount",
                    "QOSNotAllowed", "DependencyNeverSatisfied", "ReqNodeNotAvail") or bool(
        _PER_JOB.match(code) or _BUDGET.match(code))


def explain_pending(job_id: str, reason: str, name: str) -> str | None:
    """:func:`never_starts` with the facts of a live job gathered from scontrol and sinfo (best effort)."""
    if not is_candidate(reason):
        return None
    job, partition, states = None, None, None
    try:
        job = next(iter(parse_scontrol_records(_run(["scontrol", "show", "job", "-o", job_id]))), None)
        if job and job.get("Partition") and "," not in job["Partition"]:
            partition = partition_limits(job["Partition"])
        nodes = unavailable_nodes(reason)
        if nodes:
            states = parse_node_states(_run(["sinfo", "-h", "-N", "-n", nodes, "-o", "%N|%T"]))
    except (SlurmUnavailable, ValueError):
        pass
    return never_starts(reason, name, job, partition, states)

