"""jobs/partition.py and jobs/pending.py: parsing real ``scontrol``/``sinfo``/``squeue`` text, checking requests
against a partition, and the pending reasons that waiting does not clear.

The text files in tests/slurm_text/ were captured from the local Slurm 22.05.8 test cluster (tests/slurm/cluster.sh).
"""

import re
from pathlib import Path

import pytest

from jobs.partition import (gres_available, limits_from_record, parse_minutes, parse_scontrol_records,
                            parse_sinfo_gres, request_problem)
from jobs.pending import never_starts, parse_node_states, unavailable_nodes

TEXT = Path(__file__).parent / "slurm_text"


@pytest.mark.parametrize("name", ["scontrol_show_partition.txt", "scontrol_show_partition_oneline.txt"])
def test_both_layouts_give_the_same_records(name):
    records = parse_scontrol_records((TEXT / name).read_text())
    assert [r["PartitionName"] for r in records] == ["debug", "gpu"]
    debug = records[0]
    assert debug["MaxTime"] == "01:00:00" and debug["GraceTime"] == "20" and debug["AllowQos"] == "ALL"
    assert debug["TRES"] == "cpu=2,mem=21694M,node=1,billing=2,gres/gpu=1"
    assert records[1]["PreemptMode"] == "OFF"


def test_limits_of_the_local_debug_partition():
    debug = limits_from_record(parse_scontrol_records((TEXT / "scontrol_show_partition.txt").read_text())[0])
    assert debug["max_time_min"] == 60 and debug["default_time_min"] == 10
    assert debug["max_nodes"] is None and debug["total_nodes"] == 1
    assert debug["allow_qos"] is None and debug["deny_qos"] is None and debug["state"] == "UP"


def test_words_without_equals_belong_to_the_value_before():
    rec = parse_scontrol_records("JobId=7 JobState=PENDING Dependency=(null)\n   Comment=two words\n")[0]
    assert rec["Comment"] == "two words" and rec["JobState"] == "PENDING"


@pytest.mark.parametrize("text,minutes", [("01:00:00", 60), ("2-00:00:00", 2880), ("1-12", 2160), ("30", 30),
                                          ("5:30", 6), ("UNLIMITED", None), ("INFINITE", None), ("0-00:10:00", 10)])
def test_parse_minutes(text, minutes):
    assert parse_minutes(text) == minutes


def test_sinfo_gres():
    assert parse_sinfo_gres("gpu:1\n") == ["gpu:1"]
    assert parse_sinfo_gres("gpu:ampere:4(S:0-1),gpu:turing:2\n(null)\n") == ["gpu:ampere:4", "gpu:turing:2"]
    assert parse_sinfo_gres("(null)\n") == []


@pytest.mark.parametrize("request_,offered,ok", [
    ("gpu:1", ["gpu:1"], True), ("gpu", ["gpu:1"], True), ("gpu:ampere:1", ["gpu:1"], False),
    ("gpu:ampere:2", ["gpu:ampere:4", "gpu:turing:2"], True), ("gpu:pascal:1", ["gpu:ampere:4"], False),
    ("gpu:1", [], False), ("gpu:turing", ["gpu:turing:2"], True)])
def test_gres_available(request_, offered, ok):
    assert gres_available(request_, offered) is ok


# -- requests checked against a partition -----------------------------------------------------------------------------

def debug_limits(**changes) -> dict:
    """The local cluster's debug partition (real text), with some keys of the record changed, and its sinfo gres."""
    text = (TEXT / "scontrol_show_partition_oneline.txt").read_text().splitlines()[0]
    for key, value in changes.items():
        text = re.sub(rf"\b{key}=\S+", f"{key}={value}", text)
    return {**limits_from_record(parse_scontrol_records(text)[0]), "gres": ["gpu:1"]}


KEYS = {"time": "slurm.time_min", "gres": "slurm.gres"}
FITS = {"time": 60, "nodes": 1, "mem": "2G", "gpus_per_node": 0}


@pytest.mark.parametrize("params, changes, words", [
    ({"time": 61}, {}, ["slurm.time_min=61 is above partition debug's MaxTime of 60 min"]),
    ({"time": 2000}, {"MaxTime": "1-00:00:00"}, ["MaxTime of 1440 min"]),
    ({"nodes": 3}, {"MaxNodes": "2", "TotalNodes": "8"}, ["slurm.nodes=3 is above partition debug's MaxNodes of 2"]),
    ({"qos": "long"}, {"AllowQos": "short,debug"}, ["slurm.qos=long is not allowed on partition debug",
                                                    "AllowQos: short, debug"]),
    ({"qos": "long"}, {"AllowQos": "ALL DenyQos=long"}, ["slurm.qos=long is not allowed", "all but long"]),
    ({"mem": "32G"}, {"MaxMemPerNode": "16000"}, ["slurm.mem_gb=32 is above partition debug's MaxMemPerNode"]),
    ({"gres": "gpu:turing:1"}, {}, ["slurm.gres=gpu:turing:1: the nodes of partition debug offer gpu:1"]),
    ({"gpus_per_node": 2}, {}, ["slurm.gres=gpu:2 asks for 2 per node", "at most 1"]),
])
def test_request_problem_names_the_limit(params, changes, words):
    problem = request_problem({**FITS, **params}, debug_limits(**changes), KEYS)
    assert problem is not None and "\n" not in problem
    for word in words:
        assert word in problem, problem


@pytest.mark.parametrize("params", [FITS, {**FITS, "qos": "short", "gres": "gpu:1"}, {**FITS, "gpus_per_node": 1},
                                    {**FITS, "mem": "21000M"}])
def test_request_that_fits_passes(params):
    assert request_problem(params, debug_limits(), KEYS) is None


def test_no_gres_on_the_nodes():
    limits = {**debug_limits(), "gres": parse_sinfo_gres("(null)\n")}
    assert "offer no gres at all" in request_problem({**FITS, "gres": "gpu:1"}, limits, KEYS)
    assert request_problem(FITS, limits, KEYS) is None


# -- pending reasons that waiting does not clear ----------------------------------------------------------------------

def test_partition_time_limit_from_the_real_job_record():
    job = parse_scontrol_records((TEXT / "scontrol_show_job_partition_time_limit.txt").read_text())[0]
    (reason,) = [ln.split("|")[2] for ln in (TEXT / "squeue_partition_time_limit.txt").read_text().splitlines()]
    assert job["JobState"] == "PENDING" and job["Reason"] == reason == "PartitionTimeLimit"
    text = never_starts(reason, "exp", job, debug_limits())
    assert text == ("will not start: PartitionTimeLimit: its time limit (120 min) is above partition debug's MaxTime "
                    "(60 min); make cancel EXP=exp, then make submit EXP=exp SET=\"slurm.time_min=60\" (or another "
                    "slurm.partition)")
    assert never_starts(reason, "exp").startswith("will not start: PartitionTimeLimit: its time limit is above")


@pytest.mark.parametrize("reason, words", [
    ("QOSMaxWallDurationPerJobLimit", ["QOS's MaxWall", "slurm.time_min", "slurm.qos"]),
    ("AssocMaxWallDurationPerJobLimit", ["association's MaxWall"]),
    ("QOSMaxGRESPerJob", ["more than its QOS allows one job", "slurm.gpus_per_node"]),
    ("AssocMaxCpuPerJobLimit", ["more than its association allows one job"]),
    ("AssocGrpGRESMinutes", ["usage budget", "does not refill"]),
    ("AssocGrpCPUMinutesLimit", ["usage budget"]),
    ("BadConstraints", ["no node of partition its partition has what the job asks for"]),
    ("PartitionNodeLimit", ["slurm.nodes"]),
    ("InvalidQOS", ["slurm.qos"]),
    ("DependencyNeverSatisfied", ["did not succeed"]),
])
def test_reasons_that_never_clear(reason, words):
    text = never_starts(reason, "exp")
    assert text.startswith(f"will not start: {reason}: ") and "make cancel EXP=exp" in text and "\n" not in text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("reason", ["Resources", "Priority", "Dependency", "BeginTime", "AssocGrpGRES",
                                    "AssocGrpCpuLimit", "AssocGrpGRESRunMinutes", "QOSMaxJobsPerUserLimit",
                                    "AssocMaxJobsLimit", "JobHeldUser", "None"])
def test_reasons_that_clear_by_waiting_are_left_alone(reason):
    """Group limits are shared with the account's other jobs (they clear when those end), RunMinutes as jobs run."""
    assert never_starts(reason, "exp") is None


def test_req_node_not_avail_only_when_its_nodes_are_out_of_service():
    reason = "ReqNodeNotAvail, UnavailableNodes:n[01-02]"
    assert unavailable_nodes(reason) == "n[01-02]" and unavailable_nodes("ReqNodeNotAvail") == ""
    down = parse_node_states("n01|down*\nn02|drained\n")
    assert down == {"n01": "down", "n02": "drained"}
    text = never_starts(reason, "exp", node_states=down)
    assert text.startswith("will not start: ReqNodeNotAvail: the nodes it needs are out of service (n01 down, "
                           "n02 drained)"), text
    assert never_starts(reason, "exp", node_states=parse_node_states("n01|down\nn02|allocated\n")) is None
    assert never_starts(reason, "exp", node_states=parse_node_states("n01|reserved\nn02|mixed\n")) is None
    assert never_starts(reason, "exp") is None  # nothing known about the nodes: no claim
