"""What a SLURM partition allows, read from ``scontrol show partition`` and ``sinfo``, and a request checked against it.

``parse_scontrol_records`` reads the ``key=value`` text every ``scontrol show ...`` prints (partitions, jobs, nodes),
in both its layouts: the default one (a record per paragraph, continuation lines indented) and ``-o`` (a record per
line). ``partition_limits`` turns one partition's record into plain numbers and lists; ``check_request`` compares a
job's request with them (``make submit`` refuses in one line instead of leaving a job pending forever).
These parsers (records, durations, gres) also serve ``make doctor`` (jobs/doctor_slurm.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .slurm import SlurmUnavailable, _run

UNLIMITED = {"UNLIMITED", "INFINITE", "NONE", "N/A", "(null)", ""}


def parse_scontrol_records(text: str) -> list[dict]:
    """Records of ``scontrol show <entity>`` output as dicts of strings, in order.

    A record starts at a line that is not indented; its indented lines continue it. A word without ``=`` belongs to
    the value before it (``Reason=ReqNodeNotAvail, UnavailableNodes:c1`` stays one value). Values keep their text.
    """
    records: list[dict] = []
    current: dict | None = None
    last_key = None
    for line in text.splitlines():
        if not line.strip():
            current, last_key = None, None
            continue
        if current is None or not line[:1].isspace():
            current, last_key = {}, None
            records.append(current)
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep and key and re.fullmatch(r"[A-Za-z][A-Za-z0-9_:/.]*", key):
                current[key], last_key = value, key
            elif last_key is not None:
                current[last_key] += " " + word
    return records


def parse_partitions(text: str) -> dict[str, dict]:
    """``scontrol show partition`` (either layout): each partition's record by its name."""
    return {r["PartitionName"]: r for r in parse_scontrol_records(text) if r.get("PartitionName")}


def slurm_minutes(text: str) -> float | None:
    """A Slurm duration (``MaxTime``, ``TimeLimit``) in exact minutes (``5:30`` -> 5.5); None for UNLIMITED/INFINITE.

    Formats: ``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours[:minutes[:seconds]]``.
    Raises ValueError for anything else.
    """
    text = text.strip()
    if text.upper() in UNLIMITED:
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        hours, minutes, seconds = parts[0], parts[1], parts[2]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        else:
            hours, minutes, seconds = parts[:3]
    return days * 1440 + hours * 60 + minutes + seconds / 60


def parse_minutes(text: str) -> int | None:
    """The same duration in whole minutes, seconds rounded up (a limit of 30 s still allows a 1-minute request to be
    refused correctly)."""
    minutes = slurm_minutes(text)
    return None if minutes is None else math.ceil(minutes)


def _limit(value: str | None) -> int | None:
    if value is None or value.upper() in UNLIMITED:
        return None
    return int(value)


def _names(value: str | None) -> list[str] | None:
    """``AllowQos=ALL`` -> None (no restriction); ``a,b`` -> [a, b]."""
    if value is None or value.upper() in UNLIMITED or value.upper() == "ALL":
        return None
    return [v for v in value.split(",") if v]


def limits_from_record(record: dict) -> dict:
    """One ``scontrol show partition`` record as the limits a request is checked against (None = no limit)."""
    return {
        "name": record.get("PartitionName", ""),
        "state": record.get("State", ""),
        "max_time_min": parse_minutes(record.get("MaxTime", "UNLIMITED")),
        "default_time_min": parse_minutes(record.get("DefaultTime", "NONE")),
        "max_nodes": _limit(record.get("MaxNodes")),
        "total_nodes": _limit(record.get("TotalNodes")),
        "allow_qos": _names(record.get("AllowQos")),
        "deny_qos": _names(record.get("DenyQos")),
        "allow_accounts": _names(record.get("AllowAccounts")),
        "deny_accounts": _names(record.get("DenyAccounts")),
        "nodes": record.get("Nodes", ""),
        "raw": record,
    }


def partition_limits(name: str) -> dict:
    """The limits of partition ``name`` (``scontrol show partition -o name``), plus the gres types its nodes offer
    (``gres``: e.g. ``["gpu:1"]`` from ``sinfo -o %G``; empty when the nodes have none).

    Raises :class:`SlurmUnavailable` when scontrol is missing or does not know the partition.
    """
    records = parse_scontrol_records(_run(["scontrol", "show", "partition", "-o", name]))
    record = next((r for r in records if r.get("PartitionName") == name), None)
    if record is None:
        raise SlurmUnavailable(f"scontrol show partition {name}: no such partition")
    limits = limits_from_record(record)
    limits["gres"] = parse_sinfo_gres(_run(["sinfo", "-h", "-p", name, "-o", "%G"]))
    return limits


def parse_sinfo_gres(text: str) -> list[str]:
    """``sinfo -o %G`` lines (``gpu:ampere:4(S:0-1),gpu:turing:2`` or ``(null)``) -> the gres entries, sockets
    stripped."""
    entries: list[str] = []
    for line in text.splitlines():
        for item in re.split(r",(?![^()]*\))", line.strip()):
            item = re.sub(r"\(.*?\)$", "", item.strip())
            if item and item not in UNLIMITED and item not in entries:
                entries.append(item)
    return entries


@dataclass(frozen=True)
class Gres:
    name: str  # "gpu"
    type: str | None  # "ampere", or None when untyped
    count: int  # per node


def gres_entry(item: str) -> Gres:
    """One gres entry, offered or requested (``gpu``, ``gpu:2``, ``gpu:ampere``, ``gpu:ampere:4``); count 1 when it
    gives none."""
    bits = item.split(":")
    counted = len(bits) > 1 and bits[-1].isdigit()
    names = bits[:-1] if counted else bits
    return Gres(names[0], names[1] if len(names) > 1 else None, int(bits[-1]) if counted else 1)


def parse_gres(text: str) -> list[Gres]:
    """sinfo's %G (``gpu:pascal:4(S:0-1)``, ``gpu:1``, ``(null)``) -> [Gres]."""
    return [gres_entry(item) for item in parse_sinfo_gres(text)]


def gres_available(request: str, offered: list[str]) -> bool:
    """Whether a gres request (``gpu``, ``gpu:2``, ``gpu:ampere:1``) names a resource (and type) the nodes offer.
    The count is not compared: a node's count is a per-node maximum the scheduler checks itself."""
    want = gres_entry(request)
    return any(have.name == want.name and (want.type is None or want.type == have.type)
               for have in map(gres_entry, offered))


def _mem_mb(text: str | None) -> int | None:
    """``16G``/``1536M`` (sbatch) or ``21694`` / ``21694M`` (scontrol, MB) -> MB; None for UNLIMITED or unknown."""
    if text is None or text.upper() in UNLIMITED:
        return None
    found = re.fullmatch(r"(\d+)([KMGT]?)", text.strip().upper())
    if not found:
        return None
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[found.group(2)]
    return int(int(found.group(1)) * scale)


def request_problem(params: dict, limits: dict, keys: dict[str, str]) -> str | None:
    """Why partition ``limits`` can never run a job with these sbatch ``params`` (jobs.executor.sbatch_parameters),
    in one line naming the limit and the setting to change (``keys``: param -> experiment key, e.g. time ->
    slurm.time_min); None if it can. Slurm with EnforcePartLimits=NO accepts such a job and leaves it pending forever.
    """
    p = limits["name"]
    show = f"(scontrol show partition {p})"
    most = limits.get("max_time_min")
    if most is not None and params.get("time", 0) > most:
        return (f"{keys['time']}={params['time']} is above partition {p}'s MaxTime of {most} min {show}: the job would "
                f"wait forever (PartitionTimeLimit); set {keys['time']}={most} or less, or use another "
                f"slurm.partition")
    nodes = params.get("nodes", 1)
    for label, cap in (("MaxNodes", limits.get("max_nodes")), ("TotalNodes", limits.get("total_nodes"))):
        if cap is not None and nodes > cap:
            return (f"slurm.nodes={nodes} is above partition {p}'s {label} of {cap} {show}; set slurm.nodes={cap} "
                    f"or less, or use another slurm.partition")
    qos = params.get("qos")
    if qos and ((limits.get("allow_qos") is not None and qos not in limits["allow_qos"])
                or qos in (limits.get("deny_qos") or [])):
        allowed = ", ".join(limits["allow_qos"]) if limits.get("allow_qos") is not None else \
            f"all but {', '.join(limits['deny_qos'])}"
        return f"slurm.qos={qos} is not allowed on partition {p} (AllowQos: {allowed}) {show}; change slurm.qos"
    account = params.get("account")
    if account and ((limits.get("allow_accounts") is not None and account not in limits["allow_accounts"])
                    or account in (limits.get("deny_accounts") or [])):
        return f"slurm.account={account} is not allowed on partition {p} {show}; change slurm.account"
    mem_cap = _mem_mb(limits.get("raw", {}).get("MaxMemPerNode"))
    mem = _mem_mb(params.get("mem"))
    if mem_cap is not None and mem is not None and mem > mem_cap:
        return (f"slurm.mem_gb={mem / 1024:g} is above partition {p}'s MaxMemPerNode of {mem_cap / 1024:g} GB {show}; "
                f"lower slurm.mem_gb")
    gres = params.get("gres") or (f"gpu:{params['gpus_per_node']}" if params.get("gpus_per_node") else None)
    if gres and "gres" in limits:
        offered = limits["gres"]
        if not gres_available(gres, offered):
            return (f"{keys.get('gres', 'slurm.gres')}={gres}: the nodes of partition {p} offer "
                    f"{', '.join(offered) if offered else 'no gres at all'} (sinfo -p {p} -o %G); change slurm.gres "
                    f"(a type they have), or set slurm.gres=null slurm.gpus_per_node=0 on a partition without GPUs")
        count, most_gpus = gres_entry(gres).count, max_gres_count(gres, offered)
        if most_gpus is not None and count > most_gpus:
            return (f"{keys.get('gres', 'slurm.gres')}={gres} asks for {count} per node, but the nodes of partition "
                    f"{p} have at most {most_gpus} (sinfo -p {p} -o %G); lower slurm.gpus_per_node")
    return None


def max_gres_count(request: str, offered: list[str]) -> int | None:
    """The most of ``request``'s resource (and type) one node offers, or None if no entry gives a count."""
    counts = [gres_entry(item).count for item in offered
              if gres_available(request, [item]) and item.split(":")[-1].isdigit()]
    return max(counts) if counts else None
