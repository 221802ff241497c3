"""Checkpoints: one safetensors file per checkpoint, written atomically, with a ``latest.json`` pointer.

Layout of ``checkpoints/<exp>/``::

    step-000001000.safetensors   every tensor of the training state (model, ema, optimizer, rng), config in metadata
    latest.json                  {"file", "step", "sha256", "history": [{file, step, sha256}, ...]}

Nothing is pickled and nothing here knows about models: callers hand in flat ``{name: tensor}`` dicts and a
``{key: str}`` metadata dict. A file is trusted only if its SHA-256 matches the one recorded when it was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

POINTER = "latest.json"
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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync it, rename it over ``path``, fsync the folder.
    A crash at any point leaves either the old file or the new one, never a partial one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.safetensors"


def read_pointer(folder: Path) -> dict:
    try:
        pointer = json.loads((folder / POINTER).read_text())
        return pointer if isinstance(pointer, dict) else {}
    except (OSError, ValueError):
        return {}


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                    keep: int = 3) -> Path:
    """Write ``step-N.safetensors`` then ``latest.json`` (both atomically); keep the newest ``keep`` checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    data = save_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    digest = hashlib.sha256(data).hexdigest()
    path = folder / checkpoint_name(step)
    atomic_write(path, data)
    history = [h for h in read_pointer(folder).get("history", []) if h.get("file") != path.name]
    history = [{"file": path.name, "step": step, "sha256": digest}, *history][:keep]
    pointer = {"file": path.name, "step": step, "sha256": digest, "history": history}
    atomic_write(folder / POINTER, (json.dumps(pointer, indent=1) + "\n").encode())
    kept = {h["file"] for h in history}
    for old in folder.glob("step-*.safetensors"):
        if old.name not in kept:
            old.unlink(missing_ok=True)
    for stale in folder.glob(".step-*.tmp-*"):  # left by a writer killed mid-write
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            stale.unlink(missing_ok=True)
    return path


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def read_checkpoint(path: Path, expected_sha256: str | None = None) -> Checkpoint:
    """Read and verify one file; raise CorruptCheckpoint with a one-line reason if it cannot be trusted."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise CorruptCheckpoint(f"{path.name}: SHA-256 mismatch (file changed or truncated after it was written)")
    try:
        tensors = load_bytes(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(f"{path.name}: not a valid safetensors file ({exc})") from None
    match = _STEP_FILE.match(path.name)
    step = int(metadata.get("step", match.group(1) if match else -1))
    return Checkpoint(path, step, digest, tensors, metadata)


def _metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    return dict(header.get("__metadata__") or {})


def candidates(folder: Path) -> list[tuple[Path, str | None]]:
    """Checkpoints to try, newest first: those recorded in latest.json (with their hashes), then any other
    ``step-N`` files on disk (no recorded hash; e.g. the pointer itself was lost)."""
    pointer = read_pointer(folder)
    recorded = [(folder / h["file"], h.get("sha256")) for h in pointer.get("history", [])
                if isinstance(h, dict) and isinstance(h.get("file"), str) and _STEP_FILE.match(h["file"])]
    seen = {p.name for p, _ in recorded}
    others = sorted((p for p in folder.glob("step-*.safetensors") if p.name not in seen and _STEP_FILE.match(p.name)),
                    key=lambda p: int(_STEP_FILE.match(p.name).group(1)), reverse=True)
    return recorded + [(p, None) for p in others]


def load_latest(folder: Path, validate=None, warn=print) -> Checkpoint | None:
    """The newest checkpoint that reads, verifies and passes ``validate(ckpt)`` (which raises CorruptCheckpoint
    on e.g. wrong tensor shapes). Each rejected file is reported in one line via ``warn``; None if there is none."""
    if not folder.is_dir():
        return None
    pointer = read_pointer(folder)
    if pointer.get("file") and not (folder / pointer["file"]).is_file():
        warn(f"warning: {folder / POINTER} points at missing {pointer['file']}; looking for older checkpoints")
    for path, sha in candidates(folder):
        if not path.is_file():
            continue
        try:
            ckpt = read_checkpoint(path, sha)
            if validate:
                validate(ckpt)
            return ckpt
        except CorruptCheckpoint as exc:
            warn(f"warning: skipping checkpoint {exc}")
    return None
