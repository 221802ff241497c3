"""RunDir, the one reader of an experiment folder's records: torn lines (a job writing, or killed mid-write) are
skipped, a partly written line waits for the next incremental read, and jobs.json's shapes read as before."""

from __future__ import annotations

import json

import pytest

from ddpm_hpc.run_dir import RunDir


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path))
    folder = RunDir("x")
    folder.path.mkdir()
    return folder


def test_metrics_skip_torn_and_foreign_lines(run_dir):
    for step in (5, 10):
        run_dir.append_metrics({"step": step, "loss": 1.0 / step})
    with open(run_dir.metrics, "a") as f:
        f.write('[1, 2]\n{"loss": 3}\n{"step": 15, "lo')  # not records, then a line cut short
    assert [r["step"] for r in run_dir.read_metrics()] == [5, 10]
    tail = run_dir.read_metrics(tail_bytes=run_dir.metrics.stat().st_size - 3)  # from inside the step-5 line
    assert [r["step"] for r in tail] == [10]


def test_metrics_after_waits_for_a_whole_line(run_dir):
    run_dir.append_metrics({"step": 5, "loss": 0.5})
    with open(run_dir.metrics, "a") as f:
        f.write('{"step": 10, "loss"')
    records, offset = run_dir.metrics_after(0)
    assert [r["step"] for r in records] == [5] and offset == len(json.dumps({"step": 5, "loss": 0.5})) + 1
    with open(run_dir.metrics, "a") as f:
        f.write(': 0.1}\n')
    records, offset = run_dir.metrics_after(offset)
    assert records == [{"step": 10, "loss": 0.1}] and offset == run_dir.metrics.stat().st_size
    assert run_dir.metrics_after(offset) == ([], offset)


def test_jobs_and_events(run_dir):
    assert run_dir.read_jobs() == [] and run_dir.read_events() == []
    run_dir.write_jobs([{"job_id": "7", "kind": "train"}, {"kind": "no id"}])
    assert run_dir.read_jobs() == [{"job_id": "7", "kind": "train"}]
    run_dir.jobs.write_text(json.dumps([{"job_id": "8"}]))  # a bare list: only the report reads one
    assert run_dir.read_jobs() == [] and run_dir.read_jobs(bare_list=True) == [{"job_id": "8"}]
    run_dir.append_event({"job_id": "7", "event": "start"})
    with open(run_dir.events, "a") as f:
        f.write('{"job_id": "7", "ev')
    assert run_dir.read_events() == [{"job_id": "7", "event": "start"}]
