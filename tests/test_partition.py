"""jobs/partition.py: parsing real ``scontrol show partition`` / ``sinfo`` text and checking requests against it.

The text files in tests/slurm_text/ were captured from the local Slurm 22.05.8 test cluster (tests/slurm/cluster.sh).
"""

from pathlib import Path

import pytest

from jobs.partition import gres_available, limits_from_record, parse_minutes, parse_scontrol_records, parse_sinfo_gres

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
