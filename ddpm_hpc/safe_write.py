"""The project's one safe way to write a file: the new contents appear whole under the name, or not at all.

Every file a run or a report writes goes through ``atomic_write`` (checkpoints, their pointer, metrics rewrites,
job registries, reports), so a crash, a full disk or a SIGKILL never leaves a half-written file under a real name.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


# What fsync on a directory may answer where the filesystem has no such operation (some network and FUSE file
# systems): the rename has happened by then, so the file is in place; only its durability is up to that filesystem.
_DIR_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR)


def _fsync_dir(folder: Path) -> None:
    """fsync the folder so the rename in it survives a crash; a filesystem that refuses to fsync a directory
    (EINVAL and kin) is tolerated: the file is already complete under its final name."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _DIR_FSYNC_UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync it, rename it over ``path``, fsync the folder.
    A crash at any point leaves either the old file or the new one, never a partial one, under ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # e.g. disk full: leave nothing half-written behind (a SIGKILL leaves the temp file)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def save_figure(fig, path: Path, **savefig_args) -> Path:
    """Save a matplotlib figure as PNG under a temporary name, then rename it into place, and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", **savefig_args)
    finally:
        plt.close(fig)
    tmp.replace(path)  # a half-written PNG is never visible under the final name
    return path
