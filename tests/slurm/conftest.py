"""Fixtures for the SLURM suite (``tests/slurm``), which runs against the real local cluster of ``cluster.sh``.

Bring the cluster up first (``make test-slurm`` does it), e.g.::

    bash tests/slurm/cluster.sh up
    .venv/bin/python -m pytest tests/slurm -m slurm
    bash tests/slurm/cluster.sh down

Without a running cluster every test using ``slurm_cluster`` is skipped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

HERE = Path(__file__).resolve().parent
CLUSTER_SH = HERE / "cluster.sh"
NODE = "c1"
READY_STATES = ("idle", "mixed", "allocated", "completing")
SKIP_HINT = "run `make test-slurm` (or `bash tests/slurm/cluster.sh up`)"

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: runs real jobs on the local SLURM cluster of tests/slurm/cluster.sh (make test-slurm)"
    )


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


def sacct_states(job_id: str | int) -> list[str]:
    """States of every run of a job, oldest first (``-D`` keeps the REQUEUED/PREEMPTED runs).

    sacct reads slurmdbd, which lags slurmctld by 1-2 s: poll it with ``wait_for`` rather than asserting once.
    """
    proc = subprocess.run(
        ["sacct", "-D", "-n", "-X", "-P", "-o", "State", "-j", str(job_id)],
        capture_output=True, text=True, timeout=30,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sacct -j {job_id} failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class SlurmCluster:
    """The running local cluster. ``env`` holds the variables from ``cluster.sh env`` (SLURM_CONF)."""

    env: dict[str, str]
    node: str = NODE

    @property
    def conf(self) -> Path:
        return Path(self.env["SLURM_CONF"])

    # The helpers, reachable from tests without importing this conftest (tests/ has its own conftest module).
    wait_for = staticmethod(wait_for)
    sacct_states = staticmethod(sacct_states)


def cluster_env() -> dict[str, str]:
    """Parse the ``export NAME=VALUE`` lines printed by ``cluster.sh env``."""
    out = subprocess.run(
        ["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


def _not_ready_reason(env: dict[str, str]) -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    conf = env.get("SLURM_CONF", "")
    if not Path(conf).is_file():
        return f"no {conf or 'SLURM_CONF'}"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-n", NODE, "-o", "%T"],
            capture_output=True, text=True, timeout=15, env={**os.environ, **env},
        )
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}"
    states = proc.stdout.split()
    if not any(s.startswith(READY_STATES) for s in states):
        return f"node {NODE} is {' '.join(states) or 'unknown'}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Skip unless node c1 of the local cluster answers; put SLURM_CONF into os.environ for the session."""
    try:
        env = cluster_env()
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"local SLURM cluster not available ({exc}); {SKIP_HINT}")
    reason = _not_ready_reason(env)
    if reason:
        pytest.skip(f"local SLURM cluster not running ({reason}); {SKIP_HINT}")
    with pytest.MonkeyPatch.context() as mp:  # restores the previous values (or their absence) afterwards
        for name, value in env.items():
            mp.setenv(name, value)
        yield SlurmCluster(env=env)
