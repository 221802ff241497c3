"""What a SLURM cluster offers, for ``make doctor`` on the login node: ``scontrol show partition``, ``sinfo``,
``sacctmgr`` and ``scontrol show config``, read into :class:`ClusterFacts` (:mod:`jobs.doctor_fit` judges an
experiment's ``slurm:`` settings against them).

The parsers are pure functions of the commands' text, tested on text captured from a real cluster
(tests/test_doctor.py); those of partitions, durations and gres are :mod:`jobs.partition`'s, which ``make submit``
checks a request with. :func:`gather` runs the commands.
"""

from __future__ import annotations

import getpass
import grp
import os
from dataclasses import asdict, dataclass, field

from . import slurm
from .partition import Gres, parse_gres, parse_partitions

# The parts of `scontrol show config` that matter to these jobs (kept in the JSON file).
CONFIG_KEYS = ("SLURM_VERSION", "ClusterName", "Preempt", "SlurmctldParameters", "JobRequeue", "MaxBatchRequeue",
               "KillWait", "ProctrackType", "TaskPlugin", "MinJobAge", "SelectType", "GresTypes", "AccountingStorage")


@dataclass
class NodeGroup:
    gres: list[Gres] = field(default_factory=list)
    mem_mb: int | None = None  # per node (sinfo %m)
    cpus: int | None = None  # per node (sinfo %c)


@dataclass
class ClusterFacts:
    """What :func:`gather` read (each part None when its command is missing or refused)."""
    version: str | None = None
    partitions: dict[str, dict[str, str]] | None = None  # scontrol show partition, by name
    nodes: dict[str, list[NodeGroup]] | None = None  # sinfo, by partition
    config: dict[str, str] | None = None  # scontrol show config
    qos: dict[str, dict[str, str]] | None = None  # sacctmgr show qos, by name
    user_qos: set[str] | None = None  # the QOS of this user's associations (None: not visible)
    user_accounts: set[str] | None = None
    errors: dict[str, str] = field(default_factory=dict)  # command -> why it gave nothing

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("user_qos", "user_accounts"):
            data[key] = sorted(data[key]) if data[key] is not None else None
        return data


# -- parsers --------------------------------------------------------------------------------------------------------
def _number(text: str) -> int | None:
    """sinfo prints ``21694+`` when the nodes of a group differ (the smallest, plus)."""
    text = text.strip().rstrip("+")
    return int(text) if text.isdigit() else None


def parse_sinfo(text: str) -> dict[str, list[NodeGroup]]:
    """``sinfo -h -o '%P|%G|%m|%c'``: node groups per partition (the default partition's '*' removed)."""
    out: dict[str, list[NodeGroup]] = {}
    for line in text.splitlines():
        bits = line.strip().split("|")
        if len(bits) != 4:
            continue
        group = NodeGroup(parse_gres(bits[1]), _number(bits[2]), _number(bits[3]))
        out.setdefault(bits[0].rstrip("*"), []).append(group)
    return out


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config``: {key: value}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_table(text: str, keys: tuple[str, ...]) -> list[dict[str, str]]:
    """``sacctmgr -n -P`` output with the given columns."""
    return [dict(zip(keys, line.split("|"))) for line in text.splitlines() if line.count("|") == len(keys) - 1]


# -- the commands ---------------------------------------------------------------------------------------------------
def _try(facts: ClusterFacts, cmd: list[str]) -> str | None:
    try:
        return slurm._run(cmd, timeout=20)
    except slurm.SlurmUnavailable as exc:
        facts.errors[" ".join(cmd[:3])] = str(exc)
        return None


def gather() -> ClusterFacts:
    facts = ClusterFacts()
    text = _try(facts, ["sinfo", "--version"])
    facts.version = text.strip() if text else None
    text = _try(facts, ["scontrol", "show", "partition"])
    facts.partitions = parse_partitions(text) if text is not None else None
    text = _try(facts, ["sinfo", "-h", "-o", "%P|%G|%m|%c"])
    facts.nodes = parse_sinfo(text) if text is not None else None
    text = _try(facts, ["scontrol", "show", "config"])
    facts.config = {k: v for k, v in parse_config(text).items() if k.startswith(CONFIG_KEYS)} \
        if text is not None else None
    text = _try(facts, ["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxWall,Preempt,PreemptMode,GraceTime"])
    if text is not None:
        facts.qos = {r["name"]: r for r in parse_table(text, ("name", "max_wall", "preempt", "mode", "grace"))}
    text = _try(facts, ["sacctmgr", "-n", "-P", "show", "assoc", f"user={getpass.getuser()}",
                        "format=Account,Partition,QOS"])
    rows = parse_table(text or "", ("account", "partition", "qos"))
    if rows:  # no associations at all: accounting does not restrict this user (or does not show it)
        facts.user_accounts = {r["account"] for r in rows if r["account"]}
        facts.user_qos = {q for r in rows for q in r["qos"].split(",") if q}
    return facts


def user_groups() -> set[str]:
    names = set()
    for gid in {os.getgid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            pass
    return names
