"""``make doctor`` on the login node (jobs/doctor*.py): the SLURM parsers and the ``slurm:`` fit checks as pure
functions over text captured from the real local cluster (tests/slurm/cluster.sh, Slurm 22.05), the storage and
dataset lines, and the whole command without SLURM on PATH. NCC's own ``sinfo`` output could not be captured here:
the typed-GPU cases use gres strings in Slurm's format (``gpu:<type>:<count>(S:<sockets>)``) on top of the local
text, and say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddpm_hpc.devices import runs_on
from jobs import doctor_fit, doctor_host
from jobs.doctor_slurm import ClusterFacts, parse_config, parse_sinfo
from jobs.partition import Gres, parse_gres, parse_partitions, slurm_minutes

REPO = Path(__file__).resolve().parents[1]
# `scontrol show partition` on the local cluster (captured 2026-12-03, verbatim)
SCONTROL = """\
PartitionName=debug
   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL
   AllocNodes=ALL Default=YES QoS=N/A
   DefaultTime=00:10:00 DisableRootJobs=NO ExclusiveUser=NO GraceTime=20 Hidden=NO
   MaxNodes=UNLIMITED MaxTime=01:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED
   Nodes=c1
   PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO
   OverTimeLimit=NONE PreemptMode=REQUEUE
   State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE
   JobDefaults=(null)
   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED
   TRES=cpu=2,mem=21694M,node=1,billing=2,gres/gpu=1

PartitionName=gpu
   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL
   AllocNodes=ALL Default=NO QoS=N/A
   DefaultTime=00:10:00 DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO
   MaxNodes=UNLIMITED MaxTime=01:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED
   Nodes=c1
   PriorityJobFactor=1 PriorityTier=10 RootOnly=NO ReqResv=NO OverSubscribe=NO
   OverTimeLimit=NONE PreemptMode=OFF
   State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE
   JobDefaults=(null)
   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED
   TRES=cpu=2,mem=21694M,node=1,billing=2,gres/gpu=1

"""
SINFO = "debug*|gpu:1|21694|2\ngpu|gpu:1|21694|2\n"  # sinfo -h -o '%P|%G|%m|%c'
CONFIG = """\
JobRequeue              = 1
PreemptMode             = REQUEUE
PreemptType             = preempt/partition_prio
ProctrackType           = proctrack/linuxproc
SlurmctldParameters     = preempt_send_user_signal
SLURM_VERSION           = 22.05.8
"""  # scontrol show config | grep ...
LOCAL = ("slurm.partition=debug", "slurm.qos=null", "slurm.gres=null", "slurm.gpus_per_node=0", "slurm.time_min=10",
         "slurm.sample_time_min=10", "slurm.mem_gb=1.5", "slurm.cpus_per_task=1", "slurm.signal_delay_s=30")
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.1 from the index
CU126 = ["sm_50", "sm_60", "sm_61", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.fixture
def exps(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "experiments"
    root.mkdir()
    (root / "demo.yaml").write_text((REPO / "experiments" / "demo.yaml").read_text())
    (root / "_cluster.yaml").write_text((REPO / "experiments" / "_cluster.yaml").read_text())
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(root))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setenv("DDPM_HPC_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DDPM_HPC_CLUSTER_CONFIG", raising=False)
    return root


def _exp(*overrides):
    from ddpm_hpc.config import load_experiment

    return load_experiment("demo", list(overrides))


def _facts(scontrol=SCONTROL, sinfo=SINFO, **kw) -> ClusterFacts:
    return ClusterFacts(version="slurm-wlm 22.05.8", partitions=parse_partitions(scontrol), nodes=parse_sinfo(sinfo),
                        config=parse_config(CONFIG), **kw)


def _fit(exp, facts=None, groups=frozenset({"root"}), arch_list=CU130):
    checks = doctor_fit.fit_checks(exp, facts or _facts(), set(groups), True, arch_list, runs_on)
    return {c.topic: c for c in checks}


def test_parsers_on_captured_text():
    parts = parse_partitions(SCONTROL)
    assert list(parts) == ["debug", "gpu"]
    assert parts["debug"]["MaxTime"] == "01:00:00" and parts["debug"]["Default"] == "YES"
    assert parts["gpu"]["TRES"] == "cpu=2,mem=21694M,node=1,billing=2,gres/gpu=1"
    one_line = " ".join(SCONTROL.split("\n\n")[0].split())  # scontrol -o prints one line per partition
    assert parse_partitions(one_line)["debug"] == parts["debug"]
    nodes = parse_sinfo(SINFO)
    assert set(nodes) == {"debug", "gpu"} and nodes["debug"][0].mem_mb == 21694 and nodes["debug"][0].cpus == 2
    assert parse_gres("gpu:1") == [Gres("gpu", None, 1)] and parse_gres("gpu:ampere") == [Gres("gpu", "ampere", 1)]
    assert [(g.type, g.count) for g in parse_gres("gpu:pascal:4(S:0-1),gpu:turing:2(S:0)")] == [("pascal", 4),
                                                                                                ("turing", 2)]
    assert parse_gres("(null)") == []
    assert parse_config(CONFIG)["SlurmctldParameters"] == "preempt_send_user_signal"


@pytest.mark.parametrize("text, minutes", [("01:00:00", 60), ("2-00:00:00", 2880), ("7-00:00:00", 10080),
                                           ("30", 30), ("05:30", 5.5), ("1-12", 2160), ("UNLIMITED", None)])
def test_slurm_times(text, minutes):
    assert slurm_minutes(text) == minutes


def test_local_settings_fit_the_local_cluster(exps):
    checks = _fit(_exp(*LOCAL))
    assert {c.status for c in checks.values()} == {"ok"}, [c.line() for c in checks.values()]
    assert "no GPU requested" in checks["slurm.gres"].message


def test_ncc_defaults_do_not_fit_the_local_cluster(exps):
    check = _fit(_exp())["slurm.partition"]
    assert check.status == "problem" and "ug-gpu-small" in check.message and "debug, gpu" in check.fix


@pytest.mark.parametrize("overrides, topic, words", [
    (["slurm.time_min=90"], "slurm.time_min", "limit 01:00:00"),
    (["slurm.sample_time_min=61"], "slurm.sample_time_min", "60 min"),
    (["slurm.gres=gpu:ampere:1", "slurm.gpus_per_node=1"], "slurm.gres", "no GPUs of type ampere"),
    (["slurm.gres=gpu:2", "slurm.gpus_per_node=2"], "slurm.gres", "at most 1"),
    (["slurm.mem_gb=64"], "slurm.mem_gb", "21694 MB"),
    (["slurm.cpus_per_task=4"], "slurm.cpus_per_task", "have 2"),
    (["slurm.nodes=2", "data.batch_size=32"], "slurm.nodes", "has 1"),
])
def test_settings_that_do_not_fit(exps, overrides, topic, words):
    check = _fit(_exp(*LOCAL, *overrides))[topic]
    assert check.status == "problem" and words in check.message, check.line()
    assert check.fix


def test_qos_allowed_where_visible(exps):
    """AllowQos edited from ALL to NCC's names (the local cluster has no QOS restriction to capture)."""
    text = SCONTROL.replace("AllowQos=ALL", "AllowQos=debug,short", 1)
    assert _fit(_exp(*LOCAL, "slurm.qos=short"), _facts(text))["slurm.qos"].status == "ok"
    bad = _fit(_exp(*LOCAL, "slurm.qos=long-high-prio"), _facts(text))["slurm.qos"]
    assert bad.status == "problem" and "debug, short" in bad.fix
    denied = SCONTROL.replace("AllowQos=ALL", "AllowQos=ALL DenyQos=long-low-prio", 1)
    bad = _fit(_exp(*LOCAL, "slurm.qos=long-low-prio"), _facts(denied))["slurm.qos"]
    assert bad.status == "problem" and bad.fix == "use a QOS other than long-low-prio"
    # sacctmgr's QOS list (the local cluster's: only "normal") and this user's associations
    qos = {"normal": {"name": "normal", "max_wall": "", "preempt": "", "mode": "cluster", "grace": "00:00:00"}}
    assert _fit(_exp(*LOCAL, "slurm.qos=short"), _facts(qos=qos))["slurm.qos"].status == "problem"
    assert _fit(_exp(*LOCAL, "slurm.qos=normal"), _facts(qos=qos, user_qos={"normal"}))["slurm.qos"].status == "ok"
    qos["normal"]["max_wall"] = "00:20:00"
    fits = _fit(_exp(*LOCAL, "slurm.qos=normal"), _facts(qos=qos))
    assert fits["slurm.qos"].status == "ok" and "MaxWall 00:20:00" in fits["slurm.qos"].message
    late = _fit(_exp(*LOCAL, "slurm.qos=normal", "slurm.time_min=30"), _facts(qos=qos))["slurm.time_min"]
    assert late.status == "problem" and "QOS normal" in late.message


def test_gpu_generations_against_the_torch_build(exps):
    """NCC-style typed GPUs (gres strings in Slurm's format, not captured from NCC) with real builds' arch lists:
    an untyped gpu:1 that may land on Pascal warns for the CUDA 13 build, a typed pascal request is a problem."""
    sinfo = "debug*|gpu:pascal:4(S:0-1)|21694|2\ndebug*|gpu:turing:2(S:0)|21694|2\ngpu|gpu:1|21694|2\n"
    facts = _facts(sinfo=sinfo)
    gpu = ("slurm.gres=gpu:1", "slurm.gpus_per_node=1")
    untyped = _fit(_exp(*LOCAL, *gpu), facts)["slurm.gres"]
    assert untyped.status == "warning" and "pascal" in untyped.message and "gpu:turing:1" in untyped.fix
    assert _fit(_exp(*LOCAL, *gpu), facts, arch_list=CU126)["slurm.gres"].status == "ok"
    pascal = _fit(_exp(*LOCAL, "slurm.gres=gpu:pascal:1", "slurm.gpus_per_node=1"), facts)["slurm.gres"]
    assert pascal.status == "problem" and "sm_60, sm_61" in pascal.message
    assert _fit(_exp(*LOCAL, "slurm.gres=gpu:turing:1", "slurm.gpus_per_node=1"), facts)["slurm.gres"].status == "ok"
    local = _fit(_exp(*LOCAL, *gpu))["slurm.gres"]  # the local cluster's gres names no type
    assert local.status == "ok" and "not named" in local.message
    lines = doctor_fit.partition_lines(facts, {"root"}, True)
    assert "gpu:pascal:4, gpu:turing:2" in lines[0].message


def test_partitions_closed_to_the_user(exps):
    text = SCONTROL.replace("AllowGroups=ALL", "AllowGroups=staff", 1)
    facts = _facts(text)
    assert [c.topic for c in doctor_fit.partition_lines(facts, {"students"}, False)] == ["partition gpu"]
    check = _fit(_exp(*LOCAL), facts, groups={"students"})["slurm.partition"]
    assert check.status == "problem" and "AllowGroups=staff" in check.message and "gpu" in check.fix


def test_preemption_signal():
    assert doctor_fit.preemption_check(parse_config(CONFIG)).status == "ok"
    without = parse_config(CONFIG.replace("preempt_send_user_signal", "enable_configless"))
    assert doctor_fit.preemption_check(without).status == "warning"
    assert doctor_fit.preemption_check({"PreemptType": "preempt/none"}).status == "ok"


def test_filesystem_of_a_path():
    mounts = doctor_host.parse_mounts("overlay / overlay rw 0 0\nnas:/home /home nfs4 rw 0 0\n"
                                      "tmpfs /tmp tmpfs rw 0 0\n/dev/sdb1 /home/my\\040data ext4 rw 0 0\n")
    assert doctor_host.filesystem_of(Path("/home/ab12/ckpt"), mounts) == ("/home", "nfs4")
    assert doctor_host.filesystem_of(Path("/home/my data/x"), mounts) == ("/home/my data", "ext4")
    assert doctor_host.filesystem_of(Path("/tmpx"), mounts) == ("/", "overlay")
    check = doctor_host.storage_check
    assert check("checkpoints", Path("/home/x"), "nfs4", 500.0, True, True).status == "ok"
    assert check("checkpoints", Path("/tmp/x"), "tmpfs", 500.0, True, True).status == "warning"
    assert check("checkpoints", Path("/x"), "ext4", 500.0, True, True).status == "warning"  # compute nodes?
    assert check("checkpoints", Path("/x"), "ext4", 500.0, True, False).status == "ok"  # a laptop
    assert check("checkpoints", Path("/x"), "nfs4", 0.2, True, True).status == "problem"
    assert check("checkpoints", Path("/x"), "nfs4", 500.0, False, True).status == "problem"


def test_datasets_present(exps, tmp_path):
    from fixtures import write_mnist

    checks = {c.topic: c for c in doctor_host.dataset_checks(_exp("data.dataset=mnist"))}
    assert checks["data mnist (this experiment's)"].status == "problem"
    assert checks["data cifar10"].status == "warning" and checks["data digits"].status == "ok"
    write_mnist(tmp_path / "data")
    checks = {c.topic: c for c in doctor_host.dataset_checks(_exp("data.dataset=mnist"))}
    assert checks["data mnist (this experiment's)"].status == "ok"


def test_doctor_without_slurm_or_gpu_says_so_and_exits_0(exps, tmp_path, monkeypatch, capsys):
    """PATH holds no SLURM command (an empty folder); this machine has no GPU."""
    from jobs.cli import main

    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["doctor", "--submit"]) == 0
    out = capsys.readouterr().out
    assert "SLURM: sbatch and srun not found: not a SLURM login node" in out
    assert "GPUs: none visible here" in out and "probe: not submitted" in out
    written = sorted((exps / "_doctor").glob("*.json"))
    assert len(written) == 1
    report = json.loads(written[0].read_text())
    assert report["experiment"] == "demo" and report["facts"]["gpus"] == []
    assert report["facts"]["torch"]["torch"] and report["probe"]["job_id"] is None
    assert {c["topic"] for c in report["checks"]} >= {"torch", "SLURM", "checkpoints", "experiments"}


def test_doctor_exits_1_on_a_problem(exps, tmp_path, monkeypatch, capsys):
    from jobs.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["doctor", "data.dataset=cifar10"]) == 1  # an override alone: the default experiment
    assert "PROBLEM  data cifar10 (this experiment's)" in capsys.readouterr().out
