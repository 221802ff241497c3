"""Checkpoint files: format, atomic writes, rotation, and what happens with damaged or foreign files.

The corruption tests start from one real tiny training run (checkpoints at steps 2, 4, 6), damage a copy of it, and
resume in-process: each damage must be reported in one line naming the file, the run must fall back to the previous
good checkpoint and finish with exactly the tensors the undamaged run had, and no good file may be overwritten or
deleted. No test (and nothing in the project) reads a checkpoint with anything but safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file

from _train_helpers import (EXP, REPO, TINY, assert_same_state, ckpt_dir, metrics_lines, roots, run_cli,
                            write_experiment)
from ddpm_hpc import checkpoint, safe_write
from ddpm_hpc.checkpoint import CorruptCheckpoint, read_checkpoint, save_checkpoint
from ddpm_hpc.config import load_experiment
from ddpm_hpc.trainer import train


GOLDEN_STEPS = 6
GOLDEN = {**TINY, "train": {**TINY["train"], "steps": GOLDEN_STEPS, "checkpoint_every": 2, "keep_checkpoints": 3}}


# -- no pickle anywhere ---------------------------------------------------------------------------------------------


def test_nothing_in_the_project_calls_torch_load():
    # torch's loader called or imported (not safetensors' one); the needle is split so this file does not match
    needle = re.compile(r"(?<![\w.])torch\s*\.\s*" + "load" + r"\s*\("
                        r"|from\s+torch\s+import\s+[^\n]*\b" + "load" + r"\b")
    files = [p for p in REPO.rglob("*.py") if not {".venv", ".git", "build"} & set(p.relative_to(REPO).parts)]
    assert len(files) > 20
    offenders = [str(p.relative_to(REPO)) for p in files if needle.search(p.read_text(errors="replace"))]
    assert not offenders, f"{' '.join(offenders)} call torch's pickle loader"
    for name in ("checkpoint.py", "state.py", "trainer.py", "sampling.py"):
        assert not re.search(r"^\s*(import|from)\s+pickle", (REPO / "ddpm_hpc" / name).read_text(), re.M), name


# -- format, rotation, atomic writes ----------------------------------------------------------------------------------


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "model.w": torch.randn(3, 4, generator=g),
        "ema.w": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "optim.state.0.step": torch.tensor(7.0),
        "rng.cpu": torch.get_rng_state(),
        "data.next_step": torch.tensor(2**40 + seed, dtype=torch.int64),
        "flags": torch.tensor([True, False]),
        "empty": torch.zeros(0, 5),
        "half": torch.randn(2, generator=g).half(),
    }


def test_round_trip_is_exact_for_every_dtype(tmp_path):
    tensors = _tensors()
    path = save_checkpoint(tmp_path, 5, tensors, {"step": "5", "note": "x"})
    ckpt = read_checkpoint(path, json.loads((tmp_path / "latest.json").read_text())["sha256"])
    assert ckpt.step == 5 and ckpt.metadata["note"] == "x"
    assert sorted(ckpt.tensors) == sorted(tensors)
    for k, v in tensors.items():
        assert ckpt.tensors[k].dtype == v.dtype and torch.equal(ckpt.tensors[k], v), k
    assert sorted(load_file(path)) == sorted(tensors)  # any safetensors reader can read it
    pointer = json.loads((tmp_path / "latest.json").read_text())
    assert pointer["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and pointer["step"] == 5


@pytest.mark.parametrize("keep", [2, 3, 5])
def test_rotation_keeps_exactly_k_newest(tmp_path, keep):
    for step in range(10, 90, 10):
        save_checkpoint(tmp_path, step, _tensors(step), {"step": str(step)}, keep=keep)
        kept = sorted(p.name for p in tmp_path.glob("step-*.safetensors"))
        assert len(kept) == min(keep, step // 10)
    newest = [checkpoint.checkpoint_name(s) for s in range(80, 80 - 10 * keep, -10)]
    assert kept == sorted(newest)
    history = json.loads((tmp_path / "latest.json").read_text())["history"]
    assert [h["file"] for h in history] == newest
    for h in history:
        assert h["sha256"] == hashlib.sha256((tmp_path / h["file"]).read_bytes()).hexdigest()


def test_rotation_survives_a_lost_pointer(tmp_path):
    """With latest.json garbled, the next save still keeps K checkpoints (the pointer's history is not the only
    record of what exists)."""
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, _tensors(step), {"step": str(step)}, keep=3)
    (tmp_path / "latest.json").write_bytes(b"\x00garbage{")
    save_checkpoint(tmp_path, 4, _tensors(4), {"step": "4"}, keep=3)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [checkpoint.checkpoint_name(s) for s in (2, 3, 4)]


def test_failed_write_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "step-000000001.safetensors"
    target.write_bytes(b"old good content")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safe_write.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        safe_write.atomic_write(target, b"new content " * 1000)
    assert target.read_bytes() == b"old good content"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # temporary file removed too


def _refuse_directory_fsync(monkeypatch, code: int) -> list[int]:
    """os.fsync that fails with ``code`` on directories and works on files: a mock of a filesystem this machine does
    not have (some network and FUSE filesystems answer EINVAL to fsync on a directory). Returns the refused fds."""
    import stat

    real, refused = os.fsync, []

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            refused.append(fd)
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(safe_write.os, "fsync", fsync)
    return refused


def test_a_filesystem_refusing_to_fsync_a_directory_does_not_fail_the_save(tmp_path, monkeypatch):
    import errno

    refused = _refuse_directory_fsync(monkeypatch, errno.EINVAL)
    save_checkpoint(tmp_path, 1, _tensors(1), {"step": "1"})
    path = save_checkpoint(tmp_path, 2, _tensors(2), {"step": "2"})
    assert refused, "the directory fsync was not attempted"
    assert checkpoint.load_latest(tmp_path, warn=pytest.fail).path == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", *(checkpoint.checkpoint_name(s)
                                                                          for s in (1, 2))]


def test_a_real_io_error_on_the_directory_fsync_still_fails_the_write(tmp_path, monkeypatch):
    import errno

    _refuse_directory_fsync(monkeypatch, errno.EIO)
    with pytest.raises(OSError, match="Input/output error"):
        safe_write.atomic_write(tmp_path / "x.json", b"{}")


def test_failed_save_keeps_pointer_and_older_checkpoints(tmp_path, monkeypatch):
    for step in (1, 2):
        save_checkpoint(tmp_path, step, _tensors(step), {"step": str(step)})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = checkpoint.atomic_write
    monkeypatch.setattr(checkpoint, "atomic_write",
                        lambda path, data: (_ for _ in ()).throw(OSError(28, "disk full"))
                        if path.name.startswith("step-") else real(path, data))
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 3, _tensors(3), {"step": "3"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_partial_temp_file_is_never_read_and_is_cleaned_up(tmp_path):
    save_checkpoint(tmp_path, 1, _tensors(1), {"step": "1"})
    dead = tmp_path / ".step-000000002.safetensors.tmp-999999999"  # a writer killed mid-write
    dead.write_bytes(checkpoint.save_bytes(_tensors(2))[:100])
    alive = tmp_path / f".step-000000002.safetensors.tmp-{os.getpid()}"  # a writer still at work
    alive.write_bytes(b"in progress")
    assert checkpoint.load_latest(tmp_path, warn=pytest.fail).step == 1
    save_checkpoint(tmp_path, 3, _tensors(3), {"step": "3"})
    assert not dead.exists() and alive.exists()


def test_unrecorded_file_is_checked_against_its_own_digest(tmp_path):
    path = save_checkpoint(tmp_path, 1, _tensors(1), {"step": "1"})
    (tmp_path / "latest.json").unlink()
    assert read_checkpoint(path).step == 1
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor: still a well-formed safetensors file
    path.write_bytes(bytes(data))
    st_load(bytes(data))
    with pytest.raises(CorruptCheckpoint, match=r"step-000000001\.safetensors: contents do not match"):
        read_checkpoint(path)


def test_newest_file_without_reading_tensors(tmp_path, monkeypatch):
    """The file latest.json names; without a usable pointer (lost, garbled, naming a missing file), the newest
    step file on disk. Nothing but latest.json is opened."""
    assert checkpoint.newest_file(tmp_path / "none") is None and checkpoint.newest_file(tmp_path) is None
    for step in (1, 2):
        save_checkpoint(tmp_path, step, _tensors(step), {"step": str(step)})
    later = tmp_path / checkpoint.checkpoint_name(9)
    later.write_bytes(b"not checked here")  # e.g. left by a run that fell back past it: the pointer wins
    monkeypatch.setattr(checkpoint, "read_checkpoint", pytest.fail)
    assert checkpoint.newest_file(tmp_path) == tmp_path / checkpoint.checkpoint_name(2)
    pointer = tmp_path / "latest.json"
    pointer.unlink()
    assert checkpoint.newest_file(tmp_path) == later
    for text in ("\x00garbage{", json.dumps({"file": "step-000000005.safetensors", "history": []}),
                 json.dumps({"file": 5, "history": []})):
        pointer.write_text(text)
        assert checkpoint.newest_file(tmp_path) == later, text


# -- damaged checkpoints of a real run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    """A finished tiny run with checkpoints at steps 2, 4 and 6 (keep 3)."""
    root = tmp_path_factory.mktemp("golden")
    write_experiment(root, config=GOLDEN)
    with roots(root):
        outcome = train(load_experiment(EXP), log_fn=lambda _: None)
    assert outcome.status == "finished" and outcome.step == GOLDEN_STEPS
    assert sorted(p.name for p in ckpt_dir(root).glob("step-*")) == [checkpoint.checkpoint_name(s) for s in (2, 4, 6)]
    return root


def _copy(golden: Path, tmp_path: Path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(golden, root)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in ckpt_dir(root).glob("step-*.safetensors")}


def _resume(root: Path, *overrides: str):
    messages: list[str] = []
    with roots(root):
        outcome = train(load_experiment(EXP, list(overrides)), log_fn=messages.append)
    return outcome, messages


def _flip(data: bytes, where: int, n: int = 16) -> bytes:
    out = bytearray(data)
    for i in range(where, where + n):
        out[i] ^= 0x5A
    return bytes(out)


class Evil:
    """Unpickling this would create a file: proof that nothing unpickles a checkpoint."""

    marker = ""

    def __reduce__(self):
        return open, (self.marker, "w")


def _rewrite_with(root: Path, name: str, change) -> None:
    """Rewrite checkpoint ``name`` through save_checkpoint (so latest.json records its hash) after ``change``."""
    folder = ckpt_dir(root)
    ckpt = read_checkpoint(folder / name)
    tensors = dict(ckpt.tensors)
    change(tensors)
    (folder / name).unlink()
    save_checkpoint(folder, ckpt.step, tensors, {k: v for k, v in ckpt.metadata.items() if k != "content_sha256"})


STEP6 = "step-000000006.safetensors"


def _damage(root: Path, how: str) -> str:
    """Damage the newest checkpoint (or the pointer); return the file name the warning must name."""
    folder = ckpt_dir(root)
    path = folder / STEP6
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped_bytes":
        path.write_bytes(_flip(data, len(data) // 2))
    elif how == "flipped_header":
        path.write_bytes(_flip(data, 40, 4))
    elif how == "wrong_model_shape":
        assert read_checkpoint(path).tensors["model.down.1.0.weight"].shape == (8, 8, 4, 4)
        _rewrite_with(root, STEP6, lambda t: t.update({"model.down.1.0.weight": torch.zeros(8, 8, 3, 3)}))
    elif how == "wrong_optimizer_shape":
        _rewrite_with(root, STEP6, lambda t: t.update({"optim.state.0.exp_avg": torch.zeros(2, 2)}))
    elif how == "missing_tensor":
        _rewrite_with(root, STEP6, lambda t: t.pop("data.next_step"))
    elif how == "pickle":
        Evil.marker = str(root / "UNPICKLED")
        path.write_bytes(pickle.dumps({"model.down.1.0.weight": [[0.0] * 3] * 3, "payload": Evil()}))
    elif how == "pointer_missing_file":
        pointer = json.loads((folder / "latest.json").read_text())
        missing = {"file": "step-000000008.safetensors", "step": 8, "sha256": "0" * 64}
        pointer.update(missing, history=[missing, *pointer["history"]])
        (folder / "latest.json").write_text(json.dumps(pointer))
        path.write_bytes(data[:1000])  # and the newest file it does have is truncated too: fall back to step 4
        return "latest.json"
    elif how == "pointer_garbage":
        (folder / "latest.json").write_bytes(b"\x00\xff{not json")
        path.write_bytes(_flip(data, len(data) - 64))  # no recorded hash now: the file's own digest must catch this
        return "latest.json"
    else:
        raise AssertionError(how)
    return STEP6


DAMAGES = ["truncated", "flipped_bytes", "flipped_header", "wrong_model_shape", "wrong_optimizer_shape",
           "missing_tensor", "pickle", "pointer_missing_file", "pointer_garbage"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_newest_checkpoint_falls_back_and_rebuilds_it_exactly(golden, tmp_path, how):
    root = _copy(golden, tmp_path)
    good = _files(golden)
    named = _damage(root, how)
    outcome, messages = _resume(root)
    warnings = [m for m in messages if m.startswith("warning:")]
    assert all("\n" not in w for w in warnings)
    assert any(named in w for w in warnings), messages
    if named == "latest.json":
        assert any(STEP6 in w for w in warnings), messages
    assert any(re.match(r"resuming tiny from \S+step-000000004\.safetensors \(step 4/", m) for m in messages), messages
    assert outcome.status == "finished" and outcome.step == GOLDEN_STEPS
    after = _files(root)
    for name in ("step-000000002.safetensors", "step-000000004.safetensors"):
        assert after[name] == good[name], f"{name} was changed"  # nothing good overwritten or deleted
    assert sorted(after) == sorted(good)  # keep=3: still 2, 4, 6
    rebuilt = load_file(ckpt_dir(root) / STEP6)
    reference = load_file(ckpt_dir(golden) / STEP6)
    meta = read_checkpoint(ckpt_dir(root) / STEP6).metadata, read_checkpoint(ckpt_dir(golden) / STEP6).metadata
    assert_same_state(rebuilt, reference, *meta, what=how)
    assert not (root / "UNPICKLED").exists()


def test_unrecorded_pickle_newer_than_everything_is_skipped(golden, tmp_path):
    root = _copy(golden, tmp_path)
    Evil.marker = str(root / "UNPICKLED")
    (ckpt_dir(root) / "step-000000008.safetensors").write_bytes(pickle.dumps({"payload": Evil()}))
    outcome, messages = _resume(root, "train.steps=8")
    warnings = [m for m in messages if m.startswith("warning:")]
    assert len(warnings) == 1 and "\n" not in warnings[0], messages
    assert warnings[0].startswith("warning: skipping checkpoint step-000000008.safetensors: not a valid safetensors")
    assert any("resuming tiny from" in m and STEP6 in m for m in messages)
    assert outcome.step == 8 and not (root / "UNPICKLED").exists()
    assert read_checkpoint(ckpt_dir(root) / "step-000000008.safetensors").step == 8  # replaced by the real one


def test_every_checkpoint_damaged_starts_over_without_deleting_them(golden, tmp_path):
    root = _copy(golden, tmp_path)
    for path in ckpt_dir(root).glob("step-*.safetensors"):
        path.write_bytes(path.read_bytes()[:500])
    outcome, messages = _resume(root, "train.steps=1")
    assert sum(m.startswith("warning: skipping checkpoint") for m in messages) == 3
    assert not any(m.startswith("resuming") for m in messages) and outcome.step == 1
    (archive,) = ckpt_dir(root).parent.glob(f"{EXP}.old-*")  # the damaged ones are kept aside to inspect
    assert len(list(archive.glob("step-*.safetensors"))) == 3
    assert [p.name for p in ckpt_dir(root).glob("step-*.safetensors")] == ["step-000000001.safetensors"]


def test_partial_metrics_line_from_a_kill_does_not_break_resume(golden, tmp_path):
    root = _copy(golden, tmp_path)
    metrics = root / "experiments" / EXP / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    (ckpt_dir(root) / STEP6).unlink()
    metrics.write_text("\n".join(lines) + '\n{"step": 7, "lo')
    outcome, _ = _resume(root)
    assert outcome.status == "finished"
    assert metrics_lines(root) == [{k: v for k, v in json.loads(x).items() if k in ("step", "loss", "loss_smooth")}
                                   for x in lines]


def test_changed_lr_applies_after_resume(golden, tmp_path):
    root = _copy(golden, tmp_path)
    _resume(root, "train.steps=8", "train.lr=0.0005")
    groups = json.loads(read_checkpoint(ckpt_dir(root) / "step-000000008.safetensors").metadata["optim.param_groups"])
    assert [g["lr"] for g in groups] == [0.0005]


def test_switching_ema_on_mid_run_resumes_instead_of_starting_over(tmp_path):
    no_ema = {**GOLDEN, "train": {**GOLDEN["train"], "steps": 2, "ema_decay": 0.0}}
    write_experiment(tmp_path, config=no_ema)
    with roots(tmp_path):
        train(load_experiment(EXP), log_fn=lambda _: None)
    outcome, messages = _resume(tmp_path, "train.steps=4", "train.ema_decay=0.9")
    assert any(m.startswith("resuming tiny from") and "(step 2/4)" in m for m in messages), messages
    assert not any(m.startswith("warning") for m in messages), messages
    assert any(k.startswith("ema.") for k in load_file(ckpt_dir(tmp_path) / "step-000000004.safetensors"))


# -- a different experiment, and starting over ------------------------------------------------------------------------


def test_checkpoint_of_another_config_is_refused_in_one_line(golden, tmp_path):
    root = _copy(golden, tmp_path)
    before = {p.name: p.read_bytes() for p in ckpt_dir(root).iterdir()}
    other = {**GOLDEN, "model": {**GOLDEN["model"], "channels": [8, 8, 16, 16, 32]}}
    write_experiment(root, config=other)
    result = run_cli(root, "train", EXP)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "model.channels" in lines[0] and "train.restart=true" in lines[0] and STEP6 in lines[0]
    assert {p.name: p.read_bytes() for p in ckpt_dir(root).iterdir()} == before


def test_restart_starts_over_and_moves_old_run_aside(golden, tmp_path):
    root = _copy(golden, tmp_path)
    before = {p.name: p.read_bytes() for p in ckpt_dir(root).iterdir()}
    old_metrics = (root / "experiments" / EXP / "metrics.jsonl").read_text()
    for attempt in (1, 2):  # twice within a second: the second archive must not replace the first
        outcome, messages = _resume(root, "train.restart=true", "train.steps=2")
        assert outcome.step == 2 and not any(m.startswith("resuming") for m in messages)
    archives = sorted(ckpt_dir(root).parent.glob(f"{EXP}.old-*"))
    assert len(archives) == 2
    assert {p.name: p.read_bytes() for p in archives[0].iterdir()} == before  # nothing deleted or changed
    assert (sorted((root / "experiments" / EXP).glob("old-*"))[0] / "metrics.jsonl").read_text() == old_metrics
    fresh = load_file(ckpt_dir(root) / "step-000000002.safetensors")
    old = load_file(archives[0] / "step-000000002.safetensors")
    assert all(torch.equal(fresh[k], old[k]) for k in old)  # starting over reproduces the same step 2
