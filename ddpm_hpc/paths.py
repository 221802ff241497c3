"""Where things live on disk. Every root can be moved with an environment variable (clusters have small home quotas)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _root(env: str, default: Path) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else default


def experiments_root() -> Path:
    """YAML files and per-experiment output folders (``DDPM_HPC_EXPERIMENTS``)."""
    return _root("DDPM_HPC_EXPERIMENTS", REPO_ROOT / "experiments")


def existing_experiments_root() -> Path:
    """``experiments_root()``, which must be a folder (listing a missing one would quietly show nothing)."""
    root = experiments_root()
    if not root.is_dir():
        where = " (DDPM_HPC_EXPERIMENTS)" if os.environ.get("DDPM_HPC_EXPERIMENTS") else ""
        problem = "is not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"the experiments folder {root}{where} {problem}")
    return root


def checkpoints_root() -> Path:
    """Checkpoint folders, one per experiment (``DDPM_HPC_CHECKPOINTS``)."""
    return _root("DDPM_HPC_CHECKPOINTS", REPO_ROOT / "checkpoints")


def data_root() -> Path:
    """Datasets in torchvision's on-disk layout (``DDPM_HPC_DATA``)."""
    return _root("DDPM_HPC_DATA", REPO_ROOT / "data")


def check_name(name: str) -> str:
    """Refuse experiment names that could escape ``experiments/`` (``../../x``, absolute paths, ...) and the reserved
    ``_*`` names (``_cluster.yaml`` holds the cluster defaults, not an experiment)."""
    if name.startswith("_"):
        reason = "names starting with '_' are reserved (e.g. _cluster.yaml holds the cluster defaults)"
    elif "/" in name or "\\" in name or ".." in name:
        reason = "no path separators or '..'"
    elif not _NAME.match(name):
        reason = "start with a letter or digit, then use only letters, digits, '_', '-' and '.'"
    else:
        return name
    raise ConfigError(f"invalid experiment name {name!r}: {reason}")


def experiment_file(name: str) -> Path:
    return experiments_root() / f"{check_name(name)}.yaml"


def experiment_dir(name: str) -> Path:
    """Outputs of one experiment: metrics, plots, samples, report, logs."""
    return experiments_root() / check_name(name)


def checkpoint_dir(name: str) -> Path:
    return checkpoints_root() / check_name(name)
