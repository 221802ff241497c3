"""Whether an experiment's ``slurm:`` settings fit the cluster that :mod:`jobs.doctor_slurm` read: partition, time
limits, QOS, GPU type and count (and whether this torch build can drive the GPU generations the gres can land on),
memory, CPUs, nodes; plus the partition list and the pre-emption signal. Pure functions of the parsed facts."""

from __future__ import annotations

import difflib

from ddpm_hpc.config import Experiment

from .doctor_report import Check, ok, problem, warning
from .doctor_slurm import ClusterFacts, NodeGroup
from .executor import _gres_count, gpus_per_node, tasks_per_node
from .partition import parse_gres, slurm_minutes

# GPU generations by the gres type names sites use (NCC: pascal, turing, ampere), as compute capabilities.
GRES_TYPE_CAPABILITIES = {
    "pascal": ((6, 0), (6, 1)), "volta": ((7, 0),), "turing": ((7, 5),), "ampere": ((8, 0), (8, 6)),
    "ada": ((8, 9),), "hopper": ((9, 0),), "p100": ((6, 0),), "v100": ((7, 0),), "t4": ((7, 5),),
    "a100": ((8, 0),), "a30": ((8, 0),), "a40": ((8, 6),), "h100": ((9, 0),), "h200": ((9, 0),),
}
_NOT_STARTING = ("DOWN", "DRAIN", "INACTIVE")


def _listed(value: str | None) -> set[str] | None:
    """``AllowQos=ALL`` -> None (no restriction); ``a,b`` -> {"a", "b"}."""
    if value is None or value.upper() in ("ALL", "(NULL)", ""):
        return None
    return set(value.split(","))


def refusal(part: dict[str, str], groups: set[str], accounts: set[str] | None, is_root: bool) -> str | None:
    """Why this user cannot submit to the partition, or None."""
    if part.get("RootOnly") == "YES" and not is_root:
        return "RootOnly=YES"
    allowed = _listed(part.get("AllowGroups"))
    if allowed is not None and not allowed & groups:
        return f"AllowGroups={part['AllowGroups']} (yours: {', '.join(sorted(groups))})"
    allowed = _listed(part.get("AllowAccounts"))
    if allowed is not None and accounts is not None and not allowed & accounts:
        return f"AllowAccounts={part['AllowAccounts']} (yours: {', '.join(sorted(accounts))})"
    return None


def _gpu_types(groups: list[NodeGroup]) -> dict[str | None, int]:
    """GPU type -> most GPUs of that type on one node."""
    out: dict[str | None, int] = {}
    for g in groups:
        for r in g.gres:
            if r.name == "gpu":
                out[r.type] = max(out.get(r.type, 0), r.count)
    return out


def describe_partition(name: str, part: dict[str, str], groups: list[NodeGroup], default: bool) -> str:
    types = _gpu_types(groups)
    gpus = ", ".join(f"gpu:{t}:{n}" if t else f"gpu:{n} (untyped)" for t, n in types.items()) or "no GPUs"
    mem = max((g.mem_mb or 0 for g in groups), default=0)
    cpus = max((g.cpus or 0 for g in groups), default=0)
    return (f"{'(default) ' if default else ''}MaxTime {part.get('MaxTime', '?')}, {gpus}, "
            f"{part.get('TotalNodes', '?')} node(s), up to {cpus} CPUs / {mem // 1024} GB per node, "
            f"PreemptMode {part.get('PreemptMode', '?')}, GraceTime {part.get('GraceTime', '?')} s, "
            f"AllowQos {part.get('AllowQos', '?')}")


def partition_lines(facts: ClusterFacts, groups: set[str], is_root: bool) -> list[Check]:
    lines = []
    for name, part in (facts.partitions or {}).items():
        why = refusal(part, groups, facts.user_accounts, is_root)
        if why:
            continue  # not one this user can submit to
        text = describe_partition(name, part, (facts.nodes or {}).get(name, []), part.get("Default") == "YES")
        state = part.get("State", "UP")
        lines.append(ok(f"partition {name}", text) if state == "UP" else
                     warning(f"partition {name}", f"State={state}: jobs queue but do not start; {text}"))
    return lines


def _time_checks(exp: Experiment, limit: str | None, what: str, fix_where: str) -> list[Check]:
    try:
        minutes = slurm_minutes(limit) if limit else None
    except ValueError:
        return []
    out = []
    for key in ("time_min", "sample_time_min"):
        value = getattr(exp.slurm, key)
        if minutes is not None and value > minutes:
            out.append(problem(f"slurm.{key}", f"{value} min is more than {what}'s limit {limit} "
                                               f"({minutes:g} min): sbatch refuses the job",
                               f"set slurm.{key} <= {minutes:g} (training requeues itself at the limit), "
                               f"or {fix_where}"))
    return out


def _gres_checks(exp: Experiment, pname: str, groups: list[NodeGroup], arch_list, runs_on) -> list[Check]:
    s, gpus = exp.slurm, gpus_per_node(exp)
    if gpus == 0:
        return [ok("slurm.gres", "no GPU requested (CPU job)")]
    types = _gpu_types(groups)
    if not types:
        return [problem("slurm.gres", f"{s.gres or f'{gpus} GPU(s)'} requested, but partition {pname} has no GPUs "
                                      f"(sinfo %G)", "pick a GPU partition, or slurm.gres=null slurm.gpus_per_node=0 "
                                                     "for a CPU job")]
    requested = parse_gres(s.gres) if s.gres and _gres_count(s.gres) is not None else []
    wanted = requested[0].type if requested else None
    if wanted is not None and wanted not in types:
        choices = ", ".join(f"gpu:{t}:1" for t in types if t) or "gpu:1"
        return [problem("slurm.gres", f"{s.gres}: partition {pname} has no GPUs of type {wanted}",
                        f"use one of: {choices}")]
    most = types[wanted] if wanted else max(types.values())
    if gpus > most:
        return [problem("slurm.gres", f"{gpus} GPU(s) per node requested, but {pname}'s nodes have at most {most}"
                                      + (f" {wanted}" if wanted else ""), f"lower slurm.gpus_per_node to {most}")]
    asked = s.gres or f"{gpus} GPU(s)"
    reachable = [wanted] if wanted else [t for t in types if t]
    known = [t for t in reachable if t in GRES_TYPE_CAPABILITIES]
    if runs_on is None or not arch_list or not known:
        unnamed = "" if known else " (GPU generation not named by the gres types: SUBMIT=1 checks a node's GPU)"
        return [ok("slurm.gres", f"{asked} available in {pname}{unnamed}")]
    unusable = [t for t in known if not all(runs_on(c, arch_list) for c in GRES_TYPE_CAPABILITIES[t])]
    if not unusable:
        return [ok("slurm.gres", f"{asked} available in {pname}; this torch has kernels for {', '.join(known)}")]
    sms = ", ".join(f"sm_{a}{b}" for t in unusable for a, b in GRES_TYPE_CAPABILITIES[t])
    good = [f"gpu:{t}:{gpus}" for t in types if t and t not in unusable]
    fix = (f"set slurm.gres to {' or '.join(good)}" if good else "pick another partition") + \
        f", or install a torch build with {sms} (e.g. a CUDA 12.6 build; check torch.cuda.get_arch_list())"
    if wanted:
        return [problem("slurm.gres", f"{s.gres}: this torch build has no kernels for {wanted} ({sms})", fix)]
    return [warning("slurm.gres", f"{asked} may land on {', '.join(unusable)} ({sms}) in {pname}, which this torch "
                                  f"build cannot drive (the job then fails at once)", fix)]


def fit_checks(exp: Experiment, facts: ClusterFacts, groups: set[str], is_root: bool,
               arch_list=(), runs_on=None) -> list[Check]:
    """Whether the experiment's ``slurm:`` settings fit this cluster. ``runs_on(capability, arch_list)`` (from
    ddpm_hpc.devices) also judges the GPU generations a gres can land on against the torch build's ``arch_list``."""
    s, out = exp.slurm, []
    parts = facts.partitions or {}
    part = parts.get(s.partition)
    why = refusal(part, groups, facts.user_accounts, is_root) if part else None
    if part is None or why:
        usable = [n for n, p in parts.items() if not refusal(p, groups, facts.user_accounts, is_root)]
        close = difflib.get_close_matches(s.partition, usable, n=1)
        reason = why or "no such partition for you (scontrol show partition)"
        return [problem("slurm.partition", f"{s.partition}: {reason}",
                        f"set slurm.partition to one of: {', '.join(usable) or '(none visible)'}"
                        + (f" (did you mean {close[0]}?)" if close else ""))]
    state = part.get("State", "UP")
    out.append(ok("slurm.partition", f"{s.partition} exists, State {state}") if state == "UP" else
               (problem if state.startswith(_NOT_STARTING) else warning)(
                   "slurm.partition", f"{s.partition} is {state}", "pick another partition"))
    out += _time_checks(exp, part.get("MaxTime"), f"partition {s.partition}", "pick a partition with a longer MaxTime")
    if s.qos:
        allowed, denied = _listed(part.get("AllowQos")), _listed(part.get("DenyQos"))
        if (allowed is not None and s.qos not in allowed) or (denied and s.qos in denied):
            out.append(problem("slurm.qos", f"{s.qos} is not allowed in {s.partition} (AllowQos="
                                            f"{part.get('AllowQos')}, DenyQos={part.get('DenyQos', 'none')})",
                               f"use one of: {', '.join(sorted(allowed))}" if allowed else
                               f"use a QOS other than {part.get('DenyQos')}"))
        elif facts.qos is not None and facts.qos and s.qos not in facts.qos:
            out.append(problem("slurm.qos", f"no QOS named {s.qos} (sacctmgr show qos)",
                               f"use one of: {', '.join(sorted(facts.qos))}"))
        elif facts.user_qos is not None and s.qos not in facts.user_qos:
            out.append(problem("slurm.qos", f"{s.qos} is not in your associations' QOS "
                                            f"({', '.join(sorted(facts.user_qos))})",
                               f"use one of: {', '.join(sorted(facts.user_qos))}"))
        else:
            wall = (facts.qos or {}).get(s.qos, {}).get("max_wall") or None
            timing = _time_checks(exp, wall, f"QOS {s.qos}", "pick a QOS with a longer MaxWall") if wall else []
            out += timing or [ok("slurm.qos", f"{s.qos} allowed" + (f", MaxWall {wall}" if wall else "")
                                 + ("" if facts.user_qos is not None else " (your associations are not visible)"))]
    nodes = (facts.nodes or {}).get(s.partition, [])
    out += _gres_checks(exp, s.partition, nodes, arch_list, runs_on)
    mem = max((g.mem_mb or 0 for g in nodes), default=0)
    limit = part.get("MaxMemPerNode", "UNLIMITED")
    if s.mem_gb and limit.isdigit() and s.mem_gb * 1024 > int(limit):
        out.append(problem("slurm.mem_gb", f"{s.mem_gb:g} GB is more than {s.partition}'s MaxMemPerNode {limit} MB",
                           f"set slurm.mem_gb <= {int(limit) // 1024}"))
    elif s.mem_gb and mem and s.mem_gb * 1024 > mem:
        out.append(problem("slurm.mem_gb", f"{s.mem_gb:g} GB is more than the nodes of {s.partition} have "
                                           f"({mem} MB)", f"set slurm.mem_gb <= {mem // 1024}"))
    cpus = max((g.cpus or 0 for g in nodes), default=0)
    want = s.cpus_per_task * tasks_per_node(exp)
    if cpus and want > cpus:
        out.append(problem("slurm.cpus_per_task", f"{want} CPUs per node requested ({s.cpus_per_task} per task), "
                                                  f"but {s.partition}'s nodes have {cpus}",
                           f"set slurm.cpus_per_task <= {cpus // tasks_per_node(exp)}"))
    total = part.get("TotalNodes", "")
    if total.isdigit() and s.nodes > int(total):
        out.append(problem("slurm.nodes", f"{s.nodes} nodes requested, {s.partition} has {total}",
                           f"set slurm.nodes <= {total}"))
    return out


def preemption_check(config: dict[str, str] | None) -> Check | None:
    """Whether a pre-empted job gets the USR2 warning first (and can save), or only SIGTERM."""
    if config is None:
        return None
    preempt_type = config.get("PreemptType", "")
    if preempt_type in ("", "preempt/none"):
        return ok("pre-emption", "not configured (PreemptType=preempt/none): only time limits send USR2")
    flags = config.get("SlurmctldParameters", "") + "," + config.get("PreemptParameters", "")
    if "preempt_send_user_signal" in flags or "send_user_signal" in flags:
        return ok("pre-emption", f"{preempt_type} with the user signal: a pre-empted job gets USR2 first and saves "
                                 f"a checkpoint")
    return warning("pre-emption", f"{preempt_type} without send_user_signal: a pre-empted job gets SIGTERM only "
                                  f"(it saves at the step boundary if GraceTime allows, else resumes from the last "
                                  f"periodic checkpoint)", "lower train.checkpoint_minutes for pre-emptible QOS")
