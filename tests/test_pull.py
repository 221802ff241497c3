"""``make pull``: rsync from a remote that is a local path (and, where an sshd can be started, over ssh to
localhost). First run copies, second copies nothing, a changed file is copied again, checkpoints only with CKPT=1."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "pull.sh"

pytestmark = [
    pytest.mark.skipif(shutil.which("rsync") is None, reason="make pull needs rsync (apt-get install rsync)"),
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.fixture
def remote(tmp_path) -> Path:
    """A cluster-side repo checkout with two experiments' outputs and checkpoints."""
    r = tmp_path / "remote"
    for name in ("a", "b"):
        e = r / "experiments" / name
        write(e / "metrics.jsonl", '{"step": 10, "loss": 1.0}\n')
        write(e / "samples" / "step0000010-euler4-seed1234.png", b"\x89PNG fake " + name.encode())
        write(e / "samples" / "step0000010-euler4-seed1234.json", '{"step": 10}\n')
        write(e / "index.html", "<html></html>\n")
        write(e / "logs" / "train-1.out", "log\n")
        write(e / ".loss.png.tmp-123", "half written")  # an atomic writer's temporary: never copied
        write(e / "logs" / "4242_submitted.pkl", b"submitit's job pickle")  # submitit's internals: not for a laptop
        (e / "logs" / ".submission_file_0a1b.sh").symlink_to("/cluster/home/user/ddpm-hpc/experiments/a/logs/x.sh")
        write(r / "experiments" / f"{name}.yaml", "remote yaml\n")
        c = r / "checkpoints" / name
        write(c / "step-000000010.safetensors", os.urandom(2048))
        write(c / "latest.json", '{"file": "step-000000010.safetensors"}\n')
    write(r / "experiments" / "index.html", "remote index\n")
    write(r / "checkpoints" / "a.old-20250101-000000" / "step-000000005.safetensors", b"old run")
    return r


@pytest.fixture
def local(tmp_path) -> Path:
    return tmp_path / "local"


def pull(local: Path, remote: str | None, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTE", "RSYNC_SSH", "EXP", "CKPT"))}
    e.update(DDPM_HPC_EXPERIMENTS=str(local / "experiments"), DDPM_HPC_CHECKPOINTS=str(local / "checkpoints"),
             DDPM_HPC_ENV_FILE=str(local / "no.env"), PYTHON_BIN=sys.executable)
    if remote is not None:
        e["REMOTE"] = remote
    e.update(env or {})
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "pull", *args], env=e,
                          capture_output=True, text=True, timeout=120, check=False)


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_local_remote_incremental(remote, local):
    first = pull(local, str(remote), "EXP=a")
    assert first.returncode == 0, first.stderr
    got = files(local / "experiments" / "a")
    assert got == {"metrics.jsonl", "index.html", "logs/train-1.out", "samples/step0000010-euler4-seed1234.png",
                   "samples/step0000010-euler4-seed1234.json"}
    assert "5 file(s) fetched" in first.stdout and "new      metrics.jsonl" in first.stdout
    assert not (local / "checkpoints").exists() and not (local / "experiments" / "b").exists()
    assert "checkpoints not copied" in first.stdout
    assert (local / "experiments" / "index.html").is_file()  # the local list of experiments, refreshed
    mtimes = {p: p.stat().st_mtime_ns for p in (local / "experiments" / "a").rglob("*") if p.is_file()}

    second = pull(local, str(remote), "EXP=a")
    assert second.returncode == 0, second.stderr
    assert "0 file(s) fetched" in second.stdout and "already up to date" in second.stdout
    assert "new " not in second.stdout and "updated " not in second.stdout
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    changed = remote / "experiments" / "a" / "metrics.jsonl"
    changed.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.5}\n')
    os.utime(changed, (time.time() + 5, time.time() + 5))
    write(local / "experiments" / "a" / "notes.txt", "mine")  # local-only files are never deleted
    third = pull(local, str(remote) + "/", "EXP=a")
    assert third.returncode == 0, third.stderr
    assert "1 file(s) fetched" in third.stdout and "updated  metrics.jsonl" in third.stdout
    assert (local / "experiments" / "a" / "metrics.jsonl").read_text() == changed.read_text()
    assert (local / "experiments" / "a" / "notes.txt").read_text() == "mine"


def test_checkpoints_only_with_ckpt(remote, local):
    out = pull(local, str(remote), "EXP=a", "CKPT=1")
    assert out.returncode == 0, out.stderr
    assert files(local / "checkpoints") == {"a/step-000000010.safetensors", "a/latest.json"}
    assert (local / "checkpoints" / "a" / "step-000000010.safetensors").read_bytes() == \
        (remote / "checkpoints" / "a" / "step-000000010.safetensors").read_bytes()
    again = pull(local, str(remote), "EXP=a", "CKPT=1")
    assert "already up to date" in again.stdout


def test_all(remote, local):
    write(local / "experiments" / "a.yaml", "local yaml\n")
    out = pull(local, str(remote), "EXP=all")
    assert out.returncode == 0, out.stderr
    assert {"a", "b"} <= {p.name for p in (local / "experiments").iterdir() if p.is_dir()}
    assert (local / "experiments" / "a.yaml").read_text() == "local yaml\n"  # YAML files are not pulled
    assert not (local / "experiments" / "b.yaml").exists()
    assert "remote index" not in (local / "experiments" / "index.html").read_text()  # rendered locally instead
    assert not (local / "checkpoints").exists()
    out = pull(local, str(remote), "EXP=all", "CKPT=1")
    assert out.returncode == 0, out.stderr
    assert files(local / "checkpoints") == {"a/step-000000010.safetensors", "a/latest.json",
                                            "b/step-000000010.safetensors", "b/latest.json"}  # no .old-* runs


def test_env_file_and_errors(remote, local, tmp_path):
    out = pull(local, None, "EXP=a")
    assert out.returncode != 0 and "pull: error: REMOTE is not set" in out.stderr
    assert not (local / "experiments").exists()

    env_file = write(tmp_path / ".env", f"# cluster\nOTHER=1\nREMOTE=\"{remote}\"\n")
    out = pull(local, None, "EXP=a", env={"DDPM_HPC_ENV_FILE": str(env_file)})
    assert out.returncode == 0, out.stderr
    assert (local / "experiments" / "a" / "metrics.jsonl").is_file()

    out = pull(local, str(remote), "EXP=")
    assert out.returncode != 0 and "usage: make pull EXP=<name>|all" in out.stderr
    out = pull(local, str(remote), "EXP=../etc")
    assert out.returncode != 0 and "invalid experiment name" in out.stderr

    bin_dir = tmp_path / "bin"  # a PATH without rsync
    bin_dir.mkdir()
    for tool in ("dirname", "sed", "tail"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    out = subprocess.run(["/bin/bash", str(SCRIPT), "a"], env={"PATH": str(bin_dir), "REMOTE": str(remote),
                                                               "DDPM_HPC_ENV_FILE": str(tmp_path / "none")},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0 and out.stderr.strip() == \
        "pull: error: rsync is not installed here (apt-get install rsync, brew install rsync, ...)"


def errors(out: subprocess.CompletedProcess) -> list[str]:
    """stderr without make's own closing line."""
    return [ln for ln in out.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", ln)]


def test_missing_remote_folders(remote, local):
    """A wrong name or REMOTE is one line and creates no local folder (which the report would list as an
    experiment); a remote without checkpoints is a note, not a failure."""
    out = pull(local, str(remote), "EXP=nosuch")
    assert out.returncode == 2 and errors(out) == [
        f"pull: error: no experiment 'nosuch' on the remote ({remote}/experiments/nosuch/ does not exist)"]
    for exp in ("EXP=all", "EXP=a"):  # a wrong REMOTE is named as such, whichever experiment was asked for
        out = pull(local, str(remote / "wrong"), exp)
        assert out.returncode == 2 and errors(out) == [
            f"pull: error: no {remote}/wrong/experiments/ on the remote: is REMOTE (or REMOTE_EXPERIMENTS) right?"]
    out = pull(local, "localhost:/nowhere", "EXP=a", env={"RSYNC_SSH": f"ssh -p {free_port()} -o BatchMode=yes"})
    assert out.returncode == 2 and len(errors(out)) == 1, out.stderr
    assert errors(out)[0].startswith("pull: error: cannot read localhost:/nowhere/experiments/: ssh: ")
    assert not local.exists()

    shutil.rmtree(remote / "checkpoints")
    out = pull(local, str(remote), "EXP=a", "CKPT=1")
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert f"no checkpoints on the remote yet ({remote}/checkpoints/a/ does not exist)" in out.stdout
    assert (local / "experiments" / "a" / "metrics.jsonl").is_file() and not (local / "checkpoints").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """A throwaway sshd on 127.0.0.1 that accepts one generated key for the current user."""
    daemon, keygen = Path("/usr/sbin/sshd"), shutil.which("ssh-keygen")
    if not daemon.exists() or not keygen or not shutil.which("ssh"):
        pytest.skip("ssh test needs /usr/sbin/sshd, ssh and ssh-keygen (apt-get install openssh-server)")
    d = tmp_path / "ssh"
    d.mkdir()
    for key in ("host", "user"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory, required when root
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([str(daemon), "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=log)
    try:
        for _ in range(100):
            if proc.poll() is not None:
                pytest.skip(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        ssh = (f"ssh -p {port} -i {d / 'user'} -o BatchMode=yes -o StrictHostKeyChecking=no "
               f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
        probe = subprocess.run([*ssh.split(), f"{getpass.getuser()}@127.0.0.1", "command -v rsync"],
                               capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode != 0:
            pytest.skip(f"cannot log in to the test sshd: {probe.stderr.strip()[-300:]}")
        yield f"{getpass.getuser()}@127.0.0.1", ssh
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_over_ssh(remote, local, sshd):
    host, ssh = sshd
    env = {"RSYNC_SSH": ssh}
    first = pull(local, f"{host}:{remote}", "EXP=a", "CKPT=1", env=env)
    assert first.returncode == 0, first.stderr
    assert "5 file(s) fetched" in first.stdout and "2 file(s) fetched" in first.stdout
    assert f"from {host}:{remote}/experiments/a/" in first.stdout
    assert files(local / "checkpoints") == {"a/step-000000010.safetensors", "a/latest.json"}
    second = pull(local, f"{host}:{remote}", "EXP=a", "CKPT=1", env=env)
    assert second.returncode == 0 and "already up to date" in second.stdout, second.stdout + second.stderr


def test_sweep_pulls_every_member(remote, local):
    """EXP=<sweep>: the sweep's folder, then each member named in its sweep.json; the members' links to the array's
    logs in the sweep's folder resolve locally; CKPT=1 copies each member's checkpoints."""
    import json

    s = remote / "experiments" / "sw"
    write(s / "sweep.json", json.dumps({"sweep": "sw", "members": [{"name": "a", "varied": {"train.lr": "1e-3"}},
                                                                   {"name": "b", "varied": {"train.lr": "2e-3"}},
                                                                   {"name": "c", "varied": {}}]}, indent=1))
    write(s / "index.html", "<html>comparison</html>\n")
    write(s / "logs" / "7_0_0_log.out", "array task 0\n")
    (remote / "experiments" / "a" / "logs" / "7_0_0_log.out").symlink_to(Path("..", "..", "sw", "logs",
                                                                              "7_0_0_log.out"))
    proc = pull(local, str(remote), "EXP=sw", "CKPT=1")
    assert proc.returncode == 0, proc.stderr
    assert "pull: sweep sw: 3 member(s)" in proc.stdout and "pull: c: not on the remote yet" in proc.stdout
    assert files(local / "experiments" / "sw") == {"sweep.json", "index.html", "logs/7_0_0_log.out"}
    for name in ("a", "b"):
        assert "samples/step0000010-euler4-seed1234.png" in files(local / "experiments" / name)
        assert (local / "checkpoints" / name / "latest.json").is_file()
    assert (local / "experiments" / "a" / "logs" / "7_0_0_log.out").read_text() == "array task 0\n"
    assert not (local / "experiments" / "c").exists()
    assert "pull: open" in proc.stdout and "sw/index.html" in proc.stdout
