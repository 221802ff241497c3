from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from fixtures import write_cifar10, write_cifar10_python_version, write_mnist

from ddpm_hpc.data import (BatchSampler, ImageDataset, download_dataset, load_dataset, missing_files,
                           read_cifar10_records, to_model_range, to_uint8)
from ddpm_hpc.errors import ConfigError, DatasetMissing, UserError


def check_layout(ds: ImageDataset, n: int) -> None:
    assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8 and ds.images.is_contiguous()
    assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
    assert ds.num_classes == 10


@pytest.mark.parametrize("train", [True, False])
def test_mnist_round_trip(tmp_path, train):
    written = write_mnist(tmp_path, n_train=30, n_test=12)["train" if train else "test"]
    ds = load_dataset("mnist", tmp_path, train=train)
    check_layout(ds, len(written[1]))
    assert ds.name == "mnist"
    assert torch.equal(ds.labels, torch.from_numpy(written[1]))
    raw = torch.from_numpy(written[0])
    # the same 28 -> 32 resize as the practical's transforms.Resize(32), on every channel
    expected = TF.resize(raw[:, None], [32, 32], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    assert torch.equal(ds.images, expected.expand(-1, 3, -1, -1))


def test_mnist_from_env_root(mnist_root):
    assert len(load_dataset("mnist").labels) == 200  # root defaults to DDPM_HPC_DATA


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_round_trip(tmp_path, train):
    written = write_cifar10(tmp_path, n_per_batch=8, n_test=6)["train" if train else "test"]
    ds = load_dataset("cifar10", tmp_path, train=train)
    check_layout(ds, 40 if train else 6)
    assert torch.equal(ds.images, torch.from_numpy(written[0]))
    assert torch.equal(ds.labels, torch.from_numpy(written[1]))


def test_cifar10_binary_reader_matches_torchvisions_reader_of_the_python_version(tmp_path, monkeypatch):
    """The same images written in both of CIFAR-10's formats: our reader of the binary records sees the pixels and
    labels torchvision's CIFAR10 sees in the pickled python version (its MD5 check, original files only, is off).
    Only this test writes or reads the python version."""
    import torchvision.datasets.cifar as tv_cifar

    written = write_cifar10(tmp_path, n_per_batch=4)
    write_cifar10_python_version(tmp_path, written)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    tv = tv_cifar.CIFAR10(tmp_path, train=True)
    ds = load_dataset("cifar10", tmp_path)
    assert torch.equal(ds.images.permute(0, 2, 3, 1), torch.from_numpy(tv.data))
    assert ds.labels.tolist() == tv.targets


def test_cifar10_record_layout():
    """One 3073-byte record: label, then the R, G and B planes of the 32 x 32 image, row by row."""
    record = bytes([7]) + bytes(range(256)) * 12
    images, labels = read_cifar10_records(record)
    assert labels.tolist() == [7] and images.shape == (1, 3, 32, 32)
    assert images[0, 0, 0, :3].tolist() == [0, 1, 2] and images[0, 0, 1, 0] == 32  # red, row 1
    assert images[0, 1, 0, 0] == (1024 % 256) and images[0, 2, 31, 31] == (3071 % 256)  # green, blue


@pytest.mark.parametrize("damage, words", [
    (lambda data: data[:-100], "is not a whole number of 3073-byte records"),
    (lambda data: b"", "0 bytes"),
    (lambda data: bytes([10]) + data[1:], "label 10 is not a CIFAR-10 class"),
])
def test_damaged_cifar10_is_one_line(tmp_path, damage, words):
    write_cifar10(tmp_path, n_per_batch=3)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetMissing) as err:
        load_dataset("cifar10", tmp_path)
    message = str(err.value)
    assert message.startswith("cifar10 dataset (CIFAR-10's binary version) is corrupted (data_batch_2.bin: ") and \
        words in message and "make data" in message and "\n" not in message, message


def test_no_dataset_is_read_through_pickle(tmp_path, monkeypatch):
    """Every unpickler (pickle, torch.load, np.load) raises while MNIST and CIFAR-10 load, with the files that would
    tempt them there too: CIFAR-10's python version, and the MNIST/processed/*.pt that torchvision's MNIST class
    torch.loads when they exist."""
    import pickle

    written = write_cifar10(tmp_path, n_per_batch=3, n_test=2)
    write_cifar10_python_version(tmp_path, written)
    write_mnist(tmp_path, n_train=6, n_test=4)
    (tmp_path / "MNIST" / "processed").mkdir()
    for name in ("training.pt", "test.pt"):
        torch.save((torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1)), tmp_path / "MNIST" / "processed" / name)

    def refuse(*args, **kwargs):
        raise AssertionError("a dataset was read through an unpickler")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load"),
                         (np, "load")):
        monkeypatch.setattr(module, name, refuse)
    for train in (True, False):
        assert len(load_dataset("cifar10", tmp_path, train=train)) == (15 if train else 2)
        assert len(load_dataset("mnist", tmp_path, train=train)) == (6 if train else 4)


def test_the_data_module_has_no_unpickler():
    """Nothing in data.py that unpickles: no pickle, torch.load or np.load, nor torchvision's CIFAR10 (pickles) or
    MNIST (torch.loads MNIST/processed/*.pt) classes for reading; MNIST only downloads through its class."""
    source = (Path(__file__).resolve().parents[1] / "ddpm_hpc" / "data.py").read_text()
    code = "\n".join(line.split("#")[0] for line in source.splitlines())  # comments may name what is avoided
    code = code.replace("torchvision.datasets.MNIST(root, train=True, download=True)", "")
    for needle in ("import pickle", "pickle.", "torch.load", "np.load", "allow_pickle", "CIFAR10(", "MNIST("):
        assert needle not in code, needle


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("cifar10", "cifar-10-batches-bin")])
def test_missing_dataset(tmp_path, name, folder):
    with pytest.raises(DatasetMissing) as err:
        load_dataset(name, tmp_path / "nowhere")
    message = str(err.value)
    assert "\n" not in message and "make data" in message and name in message and folder in message


def test_partial_cifar10_is_missing(tmp_path):
    write_cifar10(tmp_path, n_per_batch=2)
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetMissing, match="make data"):
        load_dataset("cifar10", tmp_path)


def test_only_the_python_version_says_it_is_not_read(tmp_path):
    write_cifar10_python_version(tmp_path, write_cifar10(tmp_path / "elsewhere", n_per_batch=2))
    with pytest.raises(DatasetMissing) as err:
        load_dataset("cifar10", tmp_path)
    assert str(err.value).startswith(f"cifar10 dataset (CIFAR-10's binary version) not found in "
                                     f"{tmp_path / 'cifar-10-batches-bin'}; {tmp_path / 'cifar-10-batches-py'} (the "
                                     f"pickled python version) is not read: run `make data`"), err.value


def test_missing_files_is_the_loaders_test(tmp_path):
    assert len(missing_files("mnist", tmp_path)) == 4 and missing_files("digits", tmp_path) == []
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)  # an empty folder is not a dataset
    assert len(missing_files("mnist", tmp_path)) == 4
    write_mnist(tmp_path, n_train=3, n_test=2)
    write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    assert missing_files("mnist", tmp_path) == [] and missing_files("cifar10", tmp_path) == []
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    assert missing_files("cifar10", tmp_path) == [] and \
        missing_files("cifar10", tmp_path, train=False) == [tmp_path / "cifar-10-batches-bin" / "test_batch.bin"]


@pytest.mark.parametrize("damage", [lambda data: data[:1000], lambda data: b"garbage"])
def test_damaged_mnist_is_one_line(tmp_path, damage):
    write_mnist(tmp_path, n_train=30, n_test=2)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetMissing, match=r"^mnist dataset is corrupted \(\w+\) in .*make data"):
        load_dataset("mnist", tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_download_removes_only_what_it_created(tmp_path, monkeypatch):
    """No internet: one line, and no empty MNIST/raw or partial archive left to pass for a dataset; what was there
    before stays."""
    import torchvision.datasets as tvd
    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tvd.MNIST, "mirrors", [f"http://127.0.0.1:{free_port()}/"])  # connection refused
    with pytest.raises(UserError, match=r"^could not download mnist into .*: is there internet here\?$"):
        download_dataset("mnist", tmp_path / "new" / "data")
    assert not (tmp_path / "new").exists()

    def partial_download(url, root, filename, md5):  # an archive cut short, a half-written data file beside it
        Path(root, filename).write_bytes(b"\x1f\x8b half an archive")
        Path(root, "cifar-10-batches-bin").mkdir()
        Path(root, "cifar-10-batches-bin", "data_batch_1.bin").write_bytes(b"half")
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_url", partial_download)
    root = tmp_path / "data"
    (root / "MNIST" / "raw").mkdir(parents=True)
    (root / "MNIST" / "raw" / "mine").write_text("kept")
    (root / "notes.txt").write_text("kept")
    for name in ("mnist", "cifar10"):
        with pytest.raises(UserError, match=f"could not download {name}"):
            download_dataset(name, root)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["MNIST", "MNIST/raw", "MNIST/raw/mine",
                                                                         "notes.txt"]


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="mnist, cifar10, digits"):
        load_dataset("imagenet")


def test_digits():
    ds = load_dataset("digits")
    check_layout(ds, 1797)
    assert set(ds.labels.tolist()) == set(range(10))
    assert ds.images.max() == 255 and ds.images[:, :, :4].max() == 0  # full range; MNIST-like empty margin
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])
    assert len(load_dataset("digits", train=False).labels) == 1797  # no test split: the same set
    moved = ds.to("cpu")
    assert isinstance(moved, ImageDataset) and moved.name == "digits"


def test_model_range_round_trip():
    x = torch.arange(256, dtype=torch.uint8)
    y = to_model_range(x)
    assert y.dtype == torch.float32 and y.min() == -1 and y.max() == 1
    assert torch.equal(to_uint8(y), x)
    assert to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]  # clamped


def test_sampler_deterministic_and_epoch_coverage():
    a, b = BatchSampler(10, 5, seed=3), BatchSampler(10, 5, seed=3)
    for step in range(6):
        assert torch.equal(a.indices(step), b.indices(step))
    # two steps make one epoch: every item exactly once, and epochs are shuffled differently
    epochs = [torch.cat([a.indices(2 * e), a.indices(2 * e + 1)]) for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(10))
    assert not torch.equal(epochs[0], epochs[1])
    assert not torch.equal(a.indices(0), BatchSampler(10, 5, seed=4).indices(0))


def test_sampler_straddles_epochs():
    s = BatchSampler(10, 4, seed=0)
    perm = lambda e: torch.randperm(10, generator=torch.Generator().manual_seed(0 * 1_000_003 + e))  # noqa: E731
    stream = torch.cat([perm(0), perm(1), perm(2)])
    for step in range(7):  # step 2 takes positions 8..11: the end of epoch 0 and the start of epoch 1
        assert torch.equal(s.indices(step), stream[4 * step : 4 * step + 4])
    assert s.indices(0).dtype == torch.int64 and s.indices(0).device.type == "cpu"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: the indices kept on the GPU"))])
def test_sampler_indices_on_the_training_device_are_the_cpu_path_indices(device):
    """The trainer asks for the indices on the dataset's device (the epoch permutation is kept there): they are exactly
    the CPU path's, for every rank's share, across epoch boundaries, in any order of asking (resume)."""
    on_device, on_cpu = BatchSampler(10, 4, seed=7), BatchSampler(10, 4, seed=7)
    for step in [*range(9), 3, 0, 25]:  # straddles epochs; then steps asked again out of order, as after a resume
        for rank, world in ((0, 1), (0, 2), (1, 2)):
            idx = on_device.indices(step, rank, world, device=device)
            assert idx.device.type == device and idx.dtype == torch.int64
            assert torch.equal(idx.cpu(), on_cpu.indices(step, rank, world))
    assert torch.equal(on_device.indices(2, device=device).cpu(), on_device.indices(2))  # both devices cached


def test_sampler_larger_batch_than_dataset():
    batch = BatchSampler(3, 8, seed=1).indices(0)
    assert len(batch) == 8 and sorted(batch[:3].tolist()) == [0, 1, 2]


def test_sampler_resumption():
    old = BatchSampler(50, 16, seed=7)
    seen = [old.indices(s) for s in range(20)]
    new = BatchSampler(50, 16, seed=7)  # a restarted run, resuming at step 13
    for s in range(13, 20):
        assert torch.equal(new.indices(s), seen[s])


def test_sampler_rank_shares():
    s = BatchSampler(37, 8, seed=2)
    for step in range(10):
        shares = [s.indices(step, rank=r, world_size=2) for r in range(2)]
        assert all(len(x) == 4 for x in shares)
        assert torch.equal(torch.cat(shares), s.indices(step))
        quarters = [s.indices(step, rank=r, world_size=4) for r in range(4)]
        assert torch.equal(torch.cat(quarters), s.indices(step))


def test_sampler_bad_world_size():
    s = BatchSampler(100, 10, seed=0)
    with pytest.raises(ValueError, match="not divisible by world size 3"):
        s.indices(0, rank=0, world_size=3)
    with pytest.raises(ValueError):
        s.indices(0, rank=2, world_size=2)


def test_fixture_classes_are_distinct(tmp_path):
    """The synthetic MNIST is learnable: class means differ far more than the noise within a class."""
    images, labels = write_mnist(tmp_path, n_train=300, n_test=1)["train"]
    means = np.stack([images[labels == c].astype(np.float32).mean(0) for c in range(10)])
    nearest = ((images[:, None].astype(np.float32) - means[None]) ** 2).sum((2, 3)).argmin(1)
    assert (nearest == labels).mean() > 0.9


@pytest.fixture
def cifar_server(tmp_path, monkeypatch):
    """A real HTTP server on localhost serving ``cifar-10-binary.tar.gz`` built from the fixture files (the release's
    layout: ``cifar-10-batches-bin/...``); ``make(links=True)`` rebuilds it with a symlink for a data file."""
    import hashlib
    import tarfile
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from ddpm_hpc import data

    source, served = tmp_path / "source", tmp_path / "served"
    served.mkdir()
    written = write_cifar10(source, n_per_batch=3, n_test=2)

    def make(links: bool = False) -> str:
        archive = served / "cifar-10-binary.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted((source / "cifar-10-batches-bin").iterdir()):
                if links and path.name == "data_batch_1.bin":
                    info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    tar.addfile(info)
                else:
                    tar.add(path, arcname=f"cifar-10-batches-bin/{path.name}")
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        monkeypatch.setattr(data, "_CIFAR_MD5", md5)
        return md5

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(data, "_CIFAR_URL", f"http://127.0.0.1:{server.server_address[1]}/cifar-10-binary.tar.gz")
    yield make, written
    server.shutdown()


def test_cifar10_download_is_md5_checked_and_takes_only_the_data_files(tmp_path, cifar_server, monkeypatch):
    from ddpm_hpc import data

    make, written = cifar_server
    make()
    root = tmp_path / "data"
    download_dataset("cifar10", root)
    ds = load_dataset("cifar10", root)
    assert torch.equal(ds.images, torch.from_numpy(written["train"][0]))
    assert sorted(p.name for p in (root / "cifar-10-batches-bin").iterdir()) == sorted(
        [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin", "batches.meta.txt"])

    make()
    monkeypatch.setattr(data, "_CIFAR_MD5", "0" * 32)  # e.g. a swapped or truncated archive
    other = tmp_path / "other"
    with pytest.raises(UserError, match=r"^could not download cifar10 into .*other \(File not found or corrupted"):
        download_dataset("cifar10", other)
    assert not other.exists()  # nothing left that could pass for a dataset

    make(links=True)
    with pytest.raises(UserError, match=r"data_batch_1\.bin in cifar-10-binary\.tar\.gz is not a plain file"):
        download_dataset("cifar10", other)
    assert not other.exists()
