"""Checkpoints: one safetensors file per checkpoint, written atomically, with a ``latest.json`` pointer.

Layout of ``checkpoints/<exp>/``::

    step-000001000.safetensors   every tensor of the training state (model, ema, optimizer, rng), config in metadata
    latest.json                  {"file", "step", "sha256", "history": [{file, step, sha256}, ...]}

Nothing is pickled and nothing here knows about models: callers hand in flat ``{name: tensor}`` dicts and a
``{key: str}`` metadata dict. A file is trusted if its SHA-256 matches the one ``latest.json`` recorded when it was
written; a file the pointer does not know (the run was killed between the two renames, or ``latest.json`` itself was
lost) is trusted if its contents match the ``content_sha256`` stored in its own metadata (a digest of every tensor's
name, dtype, shape and bytes and of the other metadata), so every file is self-verifying.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from .safe_write import atomic_write

if TYPE_CHECKING:
    import torch

POINTER = "latest.json"
CONTENT_KEY = "content_sha256"
_STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    sha256: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]


class CorruptCheckpoint(Exception):
    """A checkpoint file that cannot be trusted (truncated, modified, not safetensors)."""


# torch is imported only where tensors are handled, so that finding checkpoints (reports, job checks) stays cheap.
def save_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def load_bytes(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.safetensors"


def step_of(path: Path) -> int | None:
    match = _STEP_FILE.match(path.name)
    return int(match.group(1)) if match else None


def content_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes; in name order) and the metadata except this digest."""
    import torch

    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in metadata.items() if k != CONTENT_KEY}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(memoryview(t.contiguous().cpu().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def _load_pointer(folder: Path) -> tuple[dict, str | None]:
    """``(pointer, problem)``: ``({}, None)`` if there is no ``latest.json``; ``({}, reason)`` if it is unusable."""
    path = folder / POINTER
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"cannot read it ({getattr(exc, 'strerror', None) or exc})"
    try:
        pointer = json.loads(text)
    except ValueError:
        return {}, "not valid JSON"
    history = pointer.get("history") if isinstance(pointer, dict) else None
    if not isinstance(history, list) or not all(
            isinstance(h, dict) and isinstance(h.get("file"), str) and _STEP_FILE.match(h["file"]) for h in history):
        return {}, "not a checkpoint pointer (no valid 'history' list)"
    return pointer, None


def read_pointer(folder: Path) -> dict:
    """The parsed ``latest.json``, or ``{}`` if it is missing or unusable."""
    return _load_pointer(folder)[0]


def recorded_hashes(folder: Path) -> dict[str, str | None]:
    """``{file name: SHA-256}`` as ``latest.json`` recorded them ({} without a usable pointer)."""
    return {h["file"]: h.get("sha256") for h in read_pointer(folder).get("history", [])}


def _step_files(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N.safetensors`` in ``folder``, newest first."""
    found = [(step_of(p), p) for p in folder.glob("step-*.safetensors")]
    return sorted(((s, p) for s, p in found if s is not None), key=lambda sp: sp[0], reverse=True)


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                    keep: int = 3) -> Path:
    """Write ``step-N.safetensors`` then ``latest.json`` (both atomically); keep the newest ``keep`` checkpoints.

    Retention looks at the files on disk (with the hashes ``latest.json`` recorded for them), so a lost or garbled
    pointer never makes it delete good checkpoints. Files of later steps than ``step`` (left by a run that fell back
    past them because they were corrupt) are neither counted nor deleted: the run overwrites them as it gets there."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    folder.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {**metadata, CONTENT_KEY: content_digest(cpu, metadata)}
    data = save_bytes(cpu, metadata=metadata)
    del cpu
    path = folder / checkpoint_name(step)
    digest = _hashed_while_writing(path, data)
    recorded = recorded_hashes(folder)
    older = [{"file": p.name, "step": s, "sha256": recorded.get(p.name)} for s, p in _step_files(folder) if s < step]
    history = [{"file": path.name, "step": step, "sha256": digest}, *older[:keep - 1]]
    pointer = {"file": path.name, "step": step, "sha256": digest, "history": history}
    atomic_write(folder / POINTER, (json.dumps(pointer, indent=1) + "\n").encode())
    for old in older[keep - 1:]:
        old_path = folder / old["file"]
        old_path.unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp-*"):  # left by a writer killed mid-write
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            stale.unlink(missing_ok=True)
    return path


def _hashed_while_writing(path: Path, data: bytes) -> str:
    """``atomic_write(path, data)`` and the SHA-256 of ``data`` at the same time: hashlib and file writes both release
    the GIL on large buffers, so the hash (recorded in latest.json) costs no extra wall time next to the write."""
    result: dict[str, str] = {}
    hasher = threading.Thread(target=lambda: result.update(digest=hashlib.sha256(data).hexdigest()), daemon=True)
    hasher.start()
    try:
        atomic_write(path, data)
    finally:
        hasher.join()
    return result["digest"]


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def read_checkpoint(path: Path, expected_sha256: str | None = None) -> Checkpoint:
    """Read and verify one file; raise CorruptCheckpoint with a one-line reason if it cannot be trusted.

    With ``expected_sha256`` (as recorded in ``latest.json``) the whole file must hash to it; without, the file's own
    ``content_sha256`` metadata (when present) must match its contents."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise CorruptCheckpoint(f"{path.name}: SHA-256 mismatch with {POINTER} (file truncated or changed after it "
                                f"was written)")
    try:
        tensors = load_bytes(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, OverflowError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpoint(f"{path.name}: not a valid safetensors file ({reason})") from None
    del data
    if not expected_sha256 and CONTENT_KEY in metadata and content_digest(tensors, metadata) != metadata[CONTENT_KEY]:
        raise CorruptCheckpoint(f"{path.name}: contents do not match the {CONTENT_KEY} stored in it (corrupted)")
    step = metadata.get("step", step_of(path))
    try:
        step = int(step if step is not None else -1)
    except ValueError:
        raise CorruptCheckpoint(f"{path.name}: metadata 'step' is not a number ({step!r})") from None
    return Checkpoint(path, step, digest, tensors, metadata)


def _metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    return _header_metadata(data[8:8 + header_len])


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata alone, from the file's JSON header: cheap even for a large checkpoint (nothing is verified)."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        return _header_metadata(f.read(header_len))


def _header_metadata(header_bytes: bytes) -> dict[str, str]:
    header = json.loads(header_bytes)
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("metadata is not a mapping of strings")
    return dict(metadata)


def candidates(folder: Path) -> list[tuple[Path, str | None]]:
    """Checkpoints to try, newest step first, each with the SHA-256 ``latest.json`` recorded for it (None if the
    pointer does not know the file; it is then checked against its own ``content_sha256``)."""
    recorded = recorded_hashes(folder)
    return [(p, recorded.get(p.name)) for _, p in _step_files(folder)]


def newest_file(folder: Path) -> Path | None:
    """The checkpoint a run would resume from, found without reading any tensors (for reports and job checks): the
    file ``latest.json`` names if it is there, else the newest ``step-N.safetensors`` on disk (the pointer was lost
    or names a missing file); None if there is none. Nothing is verified: ``load_latest`` does that."""
    named = read_pointer(folder).get("file")
    if isinstance(named, str) and _STEP_FILE.match(named) and (folder / named).is_file():
        return folder / named
    files = _step_files(folder)
    return files[0][1] if files else None


def load_latest(folder: Path, validate=None, warn=print) -> Checkpoint | None:
    """The newest checkpoint that reads, verifies and passes ``validate(ckpt)`` (which raises CorruptCheckpoint
    on e.g. wrong tensor shapes). Each rejected file is reported in one line via ``warn``; None if there is none.
    Nothing is renamed, overwritten or deleted here."""
    if not folder.is_dir():
        return None
    pointer, problem = _load_pointer(folder)
    if problem:
        warn(f"warning: ignoring {folder / POINTER}: {problem}; looking for the newest valid checkpoint")
    elif pointer.get("file") and not (folder / str(pointer["file"])).is_file():
        warn(f"warning: {folder / POINTER} points at missing {pointer['file']}; looking for older checkpoints")
    rejected = 0
    for path, sha in candidates(folder):
        try:
            ckpt = read_checkpoint(path, sha)
            if validate:
                validate(ckpt)
            return ckpt
        except CorruptCheckpoint as exc:
            rejected += 1
            warn(f"warning: skipping checkpoint {exc}")
    if rejected:
        warn(f"warning: no usable checkpoint left in {folder}")
    return None
