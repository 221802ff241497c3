"""The machine half of ``make doctor`` (login node or laptop): the torch build and the GPUs it sees, the filesystem
and free space under the checkpoint and experiment roots, and which datasets are on disk.

The torch and GPU facts come from :mod:`ddpm_hpc.devices`; the checks here are pure functions of them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from ddpm_hpc import paths
from ddpm_hpc.config import Experiment

from .doctor_report import Check, ok, problem, warning

# Filesystems that every node of a cluster usually mounts the same way.
SHARED_FS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "cifs", "smb3", "panfs", "wekafs", "fuse.")
MEMORY_FS = ("tmpfs", "ramfs")
LOW_SPACE_GB, NO_SPACE_GB = 10.0, 1.0


def build_check(build: dict, need_cuda: bool) -> Check:
    """``build``: devices.torch_build(). ``need_cuda``: GPU jobs will run with it (a cluster)."""
    archs = " ".join(build.get("arch_list") or []) or "none"
    driver = f", NVIDIA driver {build['driver']}" if build.get("driver") else ""
    if build.get("cuda"):
        return ok("torch", f"{build['torch']}, CUDA {build['cuda']}, kernels for {archs}{driver}")
    if need_cuda:
        return warning("torch", f"{build['torch']} is a CPU-only build{driver}: GPU jobs refuse to start",
                       "install a CUDA build (docs/slurm.md: which build for which GPU)")
    return ok("torch", f"{build['torch']} (a CPU-only build){driver}")


def gpu_checks(gpus: list[dict], arch_list: list[str]) -> list[Check]:
    """``gpus``: devices.gpu_report(); one line per GPU (none for no GPU)."""
    out = []
    for g in gpus:
        what = f"{g['name']} ({g['sm']}, capability {g['capability']}), " \
               f"{'native bf16' if g['native_bf16'] else 'no native bf16 (fp16 or fp32 instead)'}"
        if g["usable"]:
            out.append(ok(f"GPU {g['index']}", f"{what}; this torch has kernels for it"))
        else:
            out.append(problem(f"GPU {g['index']}", f"{what}; this torch has NO kernels for {g['sm']} "
                                                    f"({' '.join(arch_list) or 'none'})",
                               f"install a torch build with {g['sm']} (e.g. a CUDA 12.6 build), or use another GPU"))
    return out


def torch_checks(build: dict, gpus: list[dict], on_cluster: bool) -> list[Check]:
    """The torch build and the GPUs of this machine (the login node or a laptop)."""
    out = [build_check(build, on_cluster), *gpu_checks(gpus, build.get("arch_list") or [])]
    if not gpus:
        where = " (normal on a login node: make doctor SUBMIT=1 checks a compute node)" if on_cluster else ""
        out.append(ok("GPUs", f"none visible here{where}"))
    return out


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """/proc/mounts -> [(mount point, filesystem type)] (octal escapes such as ``\\040`` decoded)."""
    out = []
    for line in text.splitlines():
        bits = line.split()
        if len(bits) >= 3:
            point = bits[1].encode().decode("unicode_escape") if "\\" in bits[1] else bits[1]
            out.append((point, bits[2]))
    return out


def filesystem_of(path: Path, mounts: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(mount point, type) of the longest mount point containing ``path`` (the last one mounted wins a tie)."""
    best = None
    for point, fstype in mounts:
        if path == Path(point) or Path(point) in path.parents:
            if best is None or len(point) >= len(best[0]):
                best = (point, fstype)
    return best


def existing_ancestor(path: Path) -> Path:
    path = path.expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def storage_check(label: str, root: Path, fstype: str | None, free_gb: float | None, writable: bool,
                  on_cluster: bool) -> Check:
    """One line for a storage root: its filesystem type, free space and whether it can be written."""
    where = f"{root} ({fstype or 'filesystem type unknown'}"
    where += f", {free_gb:.1f} GB free)" if free_gb is not None else ")"
    if not writable:
        return problem(label, f"{where} is not writable", f"set {_VAR[label]} to a folder you can write")
    if free_gb is not None and free_gb < NO_SPACE_GB:
        return problem(label, f"{where}: almost full", f"free space, or set {_VAR[label]} elsewhere")
    if fstype and fstype.startswith(MEMORY_FS):
        return warning(label, f"{where}: in memory, lost at reboot" + (" and not seen by the compute nodes"
                                                                        if on_cluster else ""),
                       f"set {_VAR[label]} to a folder on disk" + (" that every node mounts" if on_cluster else ""))
    if free_gb is not None and free_gb < LOW_SPACE_GB:
        return warning(label, f"{where}: little space left", "each checkpoint holds the weights, EMA and Adam "
                                                             "moments: free space or lower train.keep_checkpoints")
    if on_cluster and fstype and not fstype.startswith(SHARED_FS):
        return warning(label, f"{where}: a local filesystem, the compute nodes see it only if they mount it too",
                       f"set {_VAR[label]} to a shared folder (NFS, Lustre, GPFS, ...) unless this is one node")
    return ok(label, where)


_VAR = {"checkpoints": "DDPM_HPC_CHECKPOINTS", "experiments": "DDPM_HPC_EXPERIMENTS"}


def storage_checks(on_cluster: bool) -> list[Check]:
    try:
        mounts = parse_mounts(Path("/proc/mounts").read_text())
    except OSError:
        mounts = []
    out = []
    for label, root in (("checkpoints", paths.checkpoints_root()), ("experiments", paths.experiments_root())):
        where = existing_ancestor(root)
        found = filesystem_of(where, mounts)
        fstype = found[1] if found else _stat_type(where)
        try:
            free_gb = shutil.disk_usage(where).free / 2**30
        except OSError:
            free_gb = None
        out.append(storage_check(label, root, fstype, free_gb, os.access(where, os.W_OK), on_cluster))
    return out


def _stat_type(path: Path) -> str | None:
    """``stat -f -c %T`` where /proc/mounts is missing (macOS, BSD)."""
    import subprocess

    try:
        proc = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def dataset_checks(exp: Experiment) -> list[Check]:
    """Which datasets the loader finds (its own test), the experiment's own first."""
    from ddpm_hpc.data import DATASETS, missing_files

    root = Path(exp.data.root).expanduser() if exp.data.root else paths.data_root()
    out = []
    for name in sorted(DATASETS, key=lambda n: n != exp.data.dataset):
        used = " (this experiment's)" if name == exp.data.dataset else ""
        if name == "digits":
            there = importlib.util.find_spec("sklearn") is not None
            out.append(ok(f"data {name}{used}", "ships with scikit-learn") if there else
                       (problem if used else warning)(f"data {name}{used}", "scikit-learn is not installed",
                                                      "pip install scikit-learn"))
            continue
        missing = missing_files(name, root)
        if not missing:
            out.append(ok(f"data {name}{used}", f"present in {root}"))
        else:
            text = f"not in {root} ({len(missing)} file(s) missing, e.g. {missing[0].name})"
            fix = "make data (on the login node: it has internet), or set DDPM_HPC_DATA to a folder that has it"
            out.append(problem(f"data {name}{used}", text, fix) if used else warning(f"data {name}", text, fix))
    return out
