"""What a SLURM partition allows, read from ``scontrol show partition`` and ``sinfo``, and a request checked against it.

``parse_scontrol_records`` reads the ``key=value`` text every ``scontrol show ...`` prints (partitions, jobs, nodes),
in both its layouts: the default one (a record per paragraph, continuation lines indented) and ``-o`` (a record per
line). ``partition_limits`` turns one partition's record into plain numbers and lists; ``check_request`` compares a
job's request with them (``make submit`` refuses in one line instead of leaving a job pending forever).
"""

from __future__ import annotations

import re

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


def parse_minutes(text: str) -> int | None:
    """A Slurm duration (``MaxTime``, ``TimeLimit``) in whole minutes; None for UNLIMITED/INFINITE.

    Formats: ``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours[:minutes[:seconds]]``.
    Seconds round up (a limit of 30 s still allows a 1-minute request to be refused correctly).
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
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


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


def gres_available(request: str, offered: list[str]) -> bool:
    """Whether a gres request (``gpu``, ``gpu:2``, ``gpu:ampere:1``) names a resource (and type) the nodes offer.
    The count is not compared: a node's count is a per-node maximum the scheduler checks itself."""
    want = request.split(":")
    want_name = want[0]
    want_type = want[1] if len(want) > 2 or (len(want) == 2 and not want[1].isdigit()) else None
    for item in offered:
        have = item.split(":")
        if have[0] != want_name:
            continue
        have_type = have[1] if len(have) > 2 or (len(have) == 2 and not have[1].isdigit()) else None
        if want_type is None or want_type == have_type:
            return True
    return False
