"""Datasets as one uint8 tensor (N x 3 x 32 x 32) each, and a stateless, resumable batch order."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import paths
from .errors import ConfigError, DatasetMissing, UserError

DATASETS = ("mnist", "cifar10", "digits")
_CIFAR_DIR = "cifar-10-batches-py"  # torchvision's CIFAR10.base_folder
_MNIST_DIR = Path("MNIST") / "raw"  # torchvision's MNIST.raw_folder
# What a download writes under the data root, so a failed one can remove what it created.
_DOWNLOADED = {"mnist": ("MNIST",), "cifar10": ("cifar-10-python.tar.gz", _CIFAR_DIR)}


@dataclass(frozen=True)
class ImageDataset:
    name: str
    images: torch.Tensor  # uint8, N x 3 x 32 x 32, contiguous
    labels: torch.Tensor  # int64, N
    num_classes: int

    def to(self, device) -> "ImageDataset":
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def __len__(self) -> int:
        return len(self.labels)


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return name


def _files(name: str, train: bool) -> list[str]:
    """The file names the loader reads, in torchvision's layout (its MNIST wants both splits)."""
    if name == "mnist":
        return [f"{split}-{kind}" for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    if name == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    return []


def missing_files(name: str, root: Path | None = None, train: bool = True) -> list[Path]:
    """The files the loader needs for this split that are not under ``root``: [] means the dataset is there."""
    root = Path(root) if root is not None else paths.data_root()
    folder = {"mnist": root / _MNIST_DIR, "cifar10": root / _CIFAR_DIR}.get(_check_name(name))
    extra = ["batches.meta"] if name == "cifar10" else []
    return [folder / n for n in _files(name, train) + extra if not (folder / n).is_file()]


def _missing(name: str, folder: Path, what: str = "not found") -> DatasetMissing:
    return DatasetMissing(
        f"{name} dataset {what} in {folder}: run `make data` (or `ddpm-hpc data {name}`) on a machine with "
        f"internet such as the login node, or set DDPM_HPC_DATA to a folder that has it"
    )


def _resize32(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W -> uint8 N x 3 x 32 x 32: bilinear on floats then rounded, as transforms.Resize does on
    tensors (antialias changes nothing when upsampling), and grey repeated to 3 channels."""
    x = F.interpolate(images[:, None].float(), size=(32, 32), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def _load_mnist(root: Path, train: bool) -> ImageDataset:
    import torchvision

    if missing_files("mnist", root, train):
        raise _missing("mnist", root / _MNIST_DIR)
    try:
        ds = torchvision.datasets.MNIST(root, train=train, download=False)
    except (RuntimeError, ValueError, AssertionError) as err:  # torchvision's checks of truncated or foreign files
        raise _missing("mnist", root / _MNIST_DIR, f"is corrupted ({type(err).__name__})") from err
    return ImageDataset("mnist", _resize32(ds.data), ds.targets.long().contiguous(), 10)


def _load_cifar10(root: Path, train: bool) -> ImageDataset:
    # torchvision's CIFAR10 verifies the MD5 of every batch against the original release, so it refuses any other
    # files, including the small generated ones the tests and smoke runs use. We therefore read the python batches
    # ourselves, exactly as CIFAR10.__init__ does (same folder, same pickles); downloads still go through torchvision.
    folder = root / _CIFAR_DIR
    if missing_files("cifar10", root, train):
        raise _missing("cifar10", folder)
    data, labels = [], []
    try:
        for n in _files("cifar10", train):
            with open(folder / n, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data.append(entry["data"])
            labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        images = np.vstack(data).reshape(-1, 3, 32, 32)  # rows are R, G, B planes: already CHW
    except (EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise _missing("cifar10", folder, f"is corrupted ({type(err).__name__})") from err
    return ImageDataset("cifar10", torch.from_numpy(images).contiguous(), torch.tensor(labels, dtype=torch.int64), 10)


def _load_digits() -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (values 0..16), scaled to 0..255. The strokes fill the whole 8x8 frame,
    whereas MNIST keeps a ~4 pixel margin, so we upscale to 24x24 and pad 4 pixels each side to match."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float()[:, None] * (255.0 / 16.0)
    x = F.pad(F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False), (4, 4, 4, 4))
    images = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return ImageDataset("digits", images, torch.from_numpy(bunch.target).long(), 10)


def load_dataset(name: str, root: Path | None = None, train: bool = True) -> ImageDataset:
    """The whole split, decoded once. ``digits`` has no test split: ``train=False`` returns the same 1,797 images."""
    _check_name(name)
    root = Path(root) if root is not None else paths.data_root()
    if name == "mnist":
        return _load_mnist(root, train)
    if name == "cifar10":
        return _load_cifar10(root, train)
    return _load_digits()


def download_dataset(name: str, root: Path | None = None) -> Path:
    """Fetch a dataset into ``root`` in torchvision's layout (needs internet); ``digits`` ships with scikit-learn."""
    import torchvision

    _check_name(name)
    root = Path(root) if root is not None else paths.data_root()
    try:
        with _removed_on_failure(root, _DOWNLOADED.get(name, ())):
            root.mkdir(parents=True, exist_ok=True)
            if name == "mnist":
                torchvision.datasets.MNIST(root, train=True, download=True)  # fetches both splits
            elif name == "cifar10":
                torchvision.datasets.CIFAR10(root, train=True, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; MNIST wraps mirror failures in RuntimeError
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"could not download {name} into {root} ({first_line}): is there internet here?") from err
    return root


@contextlib.contextmanager
def _removed_on_failure(root: Path, entries: tuple[str, ...]):
    """If the body fails (or is interrupted), remove the files and folders it created at or under ``root / entry``
    and the folders it created for ``root`` itself; whatever was there before stays."""
    def tree() -> set[Path]:
        found = set()
        for top in (root / e for e in entries):
            if top.exists():
                found |= {top, *(top.rglob("*") if top.is_dir() else ())}
        return found

    new_dirs = [d for d in (root, *root.parents) if not d.exists()]  # deepest first
    before = tree()
    try:
        yield
    except BaseException:
        for path in sorted(tree() - before, key=lambda p: len(p.parts), reverse=True):  # contents before folders
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        for folder in new_dirs:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]."""
    return images_uint8.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] (clamped) -> uint8 0..255, rounded; the exact inverse of ``to_model_range``."""
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


class BatchSampler:
    """Deterministic, stateless data order: the batch of global step s is a pure function of (seed, s), so a resumed
    or re-sharded run draws exactly the batches an uninterrupted one would.

    The index stream is the concatenation of per-epoch permutations (epoch e seeded with ``seed * 1_000_003 + e``);
    step s takes stream positions [s*B, (s+1)*B), so a batch may straddle two epochs.

    Each permutation is drawn on the CPU (so the order is the same whatever the device) and copied to the device the
    indices are asked for once per epoch; a step's indices are then a slice of it, on that device: no host-to-device
    copy, and no wait for the GPU, per step."""

    def __init__(self, num_items: int, batch_size: int, seed: int):
        if num_items < 1 or batch_size < 1:
            raise ValueError(f"need num_items >= 1 and batch_size >= 1, got {num_items} and {batch_size}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        # a few recent epochs per device, so consecutive steps are cheap: {(epoch, device): permutation}
        self._perms: dict[tuple[int, str], torch.Tensor] = {}

    def _perm(self, epoch: int, device: torch.device) -> torch.Tensor:
        key = (epoch, str(device))
        if key not in self._perms:
            if len(self._perms) >= 4:
                del self._perms[min(self._perms)]
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.num_items, generator=g)
            if device.type == "cuda":  # pinned, so the copy is queued like a kernel instead of making the host wait
                perm = perm.pin_memory().to(device, non_blocking=True)
            self._perms[key] = perm.to(device)
        return self._perms[key]

    def indices(self, step: int, rank: int = 0, world_size: int = 1, device=None) -> torch.LongTensor:
        """Rank's contiguous share of step's global batch, on ``device`` (default: the CPU)."""
        if world_size < 1 or self.batch_size % world_size:
            raise ValueError(f"batch size {self.batch_size} is not divisible by world size {world_size}")
        if not 0 <= rank < world_size or step < 0:
            raise ValueError(f"need 0 <= rank < world_size and step >= 0, got rank {rank}, step {step}")
        device = torch.device(device if device is not None else "cpu")
        share = self.batch_size // world_size
        pos, end = step * self.batch_size + rank * share, step * self.batch_size + (rank + 1) * share
        parts = []
        while pos < end:  # walk the stream one epoch segment at a time
            epoch, offset = divmod(pos, self.num_items)
            take = min(end - pos, self.num_items - offset)
            parts.append(self._perm(epoch, device)[offset : offset + take])
            pos += take
        return torch.cat(parts)  # a copy: callers never share the cached permutation
