"""Datasets as one uint8 tensor (N x 3 x 32 x 32) each, and a stateless, resumable batch order."""

from __future__ import annotations

import contextlib
import dataclasses
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import paths
from .errors import ConfigError, DatasetMissing, UserError

DATASETS = ("mnist", "cifar10", "digits")
# CIFAR-10's binary version (https://www.cs.toronto.edu/~kriz/cifar.html): fixed-size records, nothing to execute.
# The python version (cifar-10-batches-py, torchvision's) is pickles, which can run code when loaded: never read.
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
_CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # the release page's MD5 of the archive
_CIFAR_DIR = "cifar-10-batches-bin"  # the archive's folder
_CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue 32 x 32 planes, row-major
_CIFAR_META = "batches.meta.txt"  # the class names, one per line
_MNIST_DIR = Path("MNIST") / "raw"  # torchvision's MNIST.raw_folder
# What a download writes under the data root, so a failed one can remove what it created.
_DOWNLOADED = {"mnist": ("MNIST",), "cifar10": (_CIFAR_ARCHIVE, _CIFAR_DIR)}


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
        return [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    return []


def missing_files(name: str, root: Path | None = None, train: bool = True) -> list[Path]:
    """The files the loader needs for this split that are not under ``root``: [] means the dataset is there."""
    root = Path(root) if root is not None else paths.data_root()
    folder = {"mnist": root / _MNIST_DIR, "cifar10": root / _CIFAR_DIR}.get(_check_name(name))
    extra = [_CIFAR_META] if name == "cifar10" else []
    return [folder / n for n in _files(name, train) + extra if not (folder / n).is_file()]


def _missing(name: str, folder: Path, what: str = "not found") -> DatasetMissing:
    kind = " (CIFAR-10's binary version)" if name == "cifar10" else ""
    python = folder.with_name("cifar-10-batches-py")
    old = f"; {python} (the pickled python version) is not read" if name == "cifar10" and python.is_dir() else ""
    return DatasetMissing(
        f"{name} dataset{kind} {what} in {folder}{old}: run `make data` (or `ddpm-hpc data {name}`) on a machine "
        f"with internet such as the login node, or set DDPM_HPC_DATA to a folder that has it"
    )


def _resize32(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W -> uint8 N x 3 x 32 x 32: bilinear on floats then rounded, as transforms.Resize does on
    tensors (antialias changes nothing when upsampling), and grey repeated to 3 channels."""
    x = F.interpolate(images[:, None].float(), size=(32, 32), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def _load_mnist(root: Path, train: bool) -> ImageDataset:
    # torchvision's IDX readers, not its MNIST class: that one first torch.loads (unpickles) MNIST/processed/*.pt
    # when such files exist.
    from torchvision.datasets.mnist import read_image_file, read_label_file

    folder = root / _MNIST_DIR
    if missing_files("mnist", root, train):
        raise _missing("mnist", folder)
    prefix = "train" if train else "t10k"
    try:
        images = read_image_file(str(folder / f"{prefix}-images-idx3-ubyte"))
        labels = read_label_file(str(folder / f"{prefix}-labels-idx1-ubyte"))
        if images.dim() != 3 or labels.shape != (len(images),):
            raise ValueError(f"{len(labels)} labels for images of shape {tuple(images.shape)}")
    except (RuntimeError, ValueError, AssertionError, TypeError) as err:  # truncated or foreign files
        raise _missing("mnist", folder, f"is corrupted ({type(err).__name__})") from err
    return ImageDataset("mnist", _resize32(images), labels.long().contiguous(), 10)


def read_cifar10_records(data: bytes, source: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary records -> (images N x 3 x 32 x 32 uint8, labels N int64). A record is 3073 bytes: the label
    (0-9), then 1024 red, 1024 green and 1024 blue bytes of the 32 x 32 image, row by row; raises ValueError for
    anything else."""
    if not data or len(data) % _CIFAR_RECORD:
        raise ValueError(f"{source}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte records")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = rows[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{source}: label {labels.max()} is not a CIFAR-10 class (0-9)")
    return rows[:, 1:].reshape(-1, 3, 32, 32), labels  # planes R, G, B: already CHW


def _load_cifar10(root: Path, train: bool) -> ImageDataset:
    folder = root / _CIFAR_DIR
    if missing_files("cifar10", root, train):
        raise _missing("cifar10", folder)
    images, labels = [], []
    try:
        for n in _files("cifar10", train):
            x, y = read_cifar10_records((folder / n).read_bytes(), n)
            images.append(x)
            labels.append(y)
    except ValueError as err:
        raise _missing("cifar10", folder, f"is corrupted ({err})") from err
    return ImageDataset("cifar10", torch.from_numpy(np.concatenate(images)).contiguous(),
                        torch.from_numpy(np.concatenate(labels)), 10)


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
                _download_cifar10(root)
    except (OSError, RuntimeError, tarfile.TarError) as err:  # URLError is an OSError; MNIST wraps mirror failures
        # in RuntimeError, and so does download_url for an MD5 mismatch
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"could not download {name} into {root} ({first_line}): is there internet here?") from err
    return root


def _download_cifar10(root: Path) -> None:
    """The binary release, MD5-checked (torchvision's download_url), then only its data files taken out of the
    archive: plain files at the names the release has, never a link or a path outside ``root``."""
    from torchvision.datasets.utils import download_url

    download_url(_CIFAR_URL, str(root), _CIFAR_ARCHIVE, _CIFAR_MD5)
    folder = root / _CIFAR_DIR
    folder.mkdir(exist_ok=True)
    with tarfile.open(root / _CIFAR_ARCHIVE, "r:gz") as tar:
        for name in _files("cifar10", True) + _files("cifar10", False) + [_CIFAR_META]:
            try:
                member = tar.getmember(f"{_CIFAR_DIR}/{name}")
            except KeyError:
                raise tarfile.TarError(f"{_CIFAR_ARCHIVE} has no {_CIFAR_DIR}/{name}") from None
            if not member.isreg():
                raise tarfile.TarError(f"{member.name} in {_CIFAR_ARCHIVE} is not a plain file")
            with tar.extractfile(member) as src:
                (folder / name).write_bytes(src.read())


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
