"""Write small but real datasets on disk, in exactly the layout the loaders read, with learnable content.

Each class is a distinct simple shape (ring, bar, cross, ...) with a random shift, brightness and noise, so a model
trained on them has something to learn. The writers return what they wrote, for round-trip checks.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _shape(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float mask in [0, 1] of class ``label``'s shape, randomly shifted by up to size/14 pixels."""
    shift = rng.integers(-(size // 14), size // 14 + 1, size=2)
    y, x = np.mgrid[:size, :size].astype(np.float32)
    y, x = (y - size / 2 + 0.5 - shift[0]) / (size / 2), (x - size / 2 + 0.5 - shift[1]) / (size / 2)  # ~[-1, 1]
    r, w = np.hypot(x, y), 0.12  # radius, stroke half-width
    masks = [
        np.abs(r - 0.55) < w,  # 0 ring
        np.abs(x) < w,  # 1 vertical bar
        np.abs(y) < w,  # 2 horizontal bar
        np.abs(x - y) < 1.4 * w,  # 3 diagonal
        np.abs(x + y) < 1.4 * w,  # 4 anti-diagonal
        (np.abs(x) < w) | (np.abs(y) < w),  # 5 plus
        (np.abs(x - y) < 1.4 * w) | (np.abs(x + y) < 1.4 * w),  # 6 X
        np.abs(np.maximum(np.abs(x), np.abs(y)) - 0.55) < w,  # 7 square outline
        r < 0.45,  # 8 disc
        np.abs(np.abs(x) - 0.4) < w,  # 9 two vertical bars
    ]
    return (masks[label] & (r < 0.9)).astype(np.float32)


def _grey_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((len(labels), size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        img = _shape(int(label), size, rng) * rng.uniform(180, 255) + rng.normal(0, 12, (size, size))
        out[i] = np.clip(img, 0, 255).round().astype(np.uint8)
    return out


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") file: magic 0x0000 08 <ndim> (08 = ubyte), big-endian int32 dims, raw bytes."""
    assert array.dtype == np.uint8
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(root: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> dict:
    """``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed: torchvision 0.29's
    ``_check_exists`` only looks for those four files, and needs all four even to load one split).

    Returns ``{"train": (images N x 28 x 28 uint8, labels N int64), "test": (...)}``."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = _grey_images(labels, 28, rng)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = (images, labels.astype(np.int64))
    return written


def write_cifar10(root: Path, n_per_batch: int = 40, n_test: int | None = None, seed: int = 0) -> dict:
    """``root/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` and ``batches.meta.txt``, as in CIFAR-10's
    binary release (cifar-10-binary.tar.gz): each image is one 3073-byte record, the label byte (0-9) then the
    1024 red, 1024 green and 1024 blue bytes of the 32 x 32 image, row by row; the meta file holds the class names,
    one per line. Each class is a shape in its own colour on a darker, tinted background.

    Returns ``{"train": (images N x 3 x 32 x 32 uint8, labels N int64), "test": (...)}``, train in batch order."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    palette = rng.uniform(60, 255, size=(10, 3))  # one foreground colour per class
    written = {"train": ([], [])}
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in batches:
        n = n_per_batch if name != "test_batch" or n_test is None else n_test
        labels = rng.integers(0, 10, size=n)
        images = np.empty((n, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            mask = _shape(int(label), 32, rng)
            background = rng.uniform(0, 60, size=(3, 1, 1))
            img = background + mask * (palette[label][:, None, None] - background) + rng.normal(0, 8, (3, 32, 32))
            images[i] = np.clip(img, 0, 255).round().astype(np.uint8)
        records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(n, 3072)], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
        if name == "test_batch":
            written["test"] = (images, labels.astype(np.int64))
        else:
            written["train"][0].append(images)
            written["train"][1].append(labels.astype(np.int64))
    written["train"] = (np.concatenate(written["train"][0]), np.concatenate(written["train"][1]))
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR_LABEL_NAMES) + "\n\n")
    return written


def write_cifar10_python_version(root: Path, written: dict) -> None:
    """The same images in CIFAR-10's python version (``cifar-10-batches-py``: pickled dicts), only so that a test
    can compare our binary reader with torchvision's reader of that version. The toolkit never reads these files."""
    import pickle

    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = written["train"]
    chunks = np.array_split(np.arange(len(labels)), 5)
    for i, idx in enumerate(chunks, start=1):
        entry = {"labels": [int(v) for v in labels[idx]], "data": images[idx].reshape(len(idx), 3072)}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(entry, protocol=2))
    test_images, test_labels = written["test"]
    entry = {"labels": [int(v) for v in test_labels], "data": test_images.reshape(len(test_labels), 3072)}
    (folder / "test_batch").write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": CIFAR_LABEL_NAMES, "num_cases_per_batch": len(chunks[0]), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
