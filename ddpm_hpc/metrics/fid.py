"""FID: Fréchet distance between Inception-v3 pool features (2048-d) of samples and of the dataset's training split.

The network is torch-fidelity's ``FeatureExtractorInceptionV3``: the TensorFlow "2015-12-05" Inception graph that
published FIDs use, ported to PyTorch with the TF1 bilinear resize to 299 px, taking uint8 images. Its weights are
read from a LOCAL file only (compute nodes have no internet), found in this order:

1. ``--fid-weights PATH`` on ``ddpm-hpc eval``;
2. the environment variable ``DDPM_HPC_FID_WEIGHTS``;
3. ``$DDPM_HPC_DATA/fid/weights-inception-2015-12-05-6726825d.pth`` (where ``make fid-weights`` puts it).

The file's SHA-256 must equal :data:`WEIGHTS_SHA256` (torch-fidelity's release file, 95,628,359 bytes); only then is it
handed to torch-fidelity (which unpickles it). ``make fid-weights`` (``python -m ddpm_hpc.metrics.fid fetch``) fetches
it once from torch-fidelity's own URL on a machine with internet (the login node). torch-fidelity is the optional
extra ``pip install -e '.[fid]'``.

Reference statistics (mean and covariance of the real images' features, float64) are computed once per dataset,
number of images, weights file, device type and precision, and cached as safetensors under ``checkpoints/_fid/``;
so is the real-data floor of each N and class layout (``floor.py``). Any feature network with the
same interface (uint8 N x 3 x H x W -> N x D) can stand in for Inception, as the tests do.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from .. import paths
from ..checkpoint import atomic_write
from ..errors import UserError
from .floor import NOTE as FLOOR_NOTE
from .floor import FeatureSetup, class_counts, eval_setup, floor_distance, layout_name, ratio, real_splits
from .frechet import frechet_distance, gaussian_stats

ENV = "DDPM_HPC_FID_WEIGHTS"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE  # if not importable
HOW_TO_GET = ("run `make fid-weights` on a machine with internet (the login node), or set "
              f"{ENV} to a copy of {WEIGHTS_FILE}")
NOTE = ("FID: Inception-v3 (2015-12-05) pool features via torch-fidelity against the dataset's training split "
        "(digits: 80 % of it); "
        "comparable to published FID only at the same N of samples and reference images (usually 50k)")


@dataclass
class FeatureNet:
    """A feature extractor (uint8 images -> N x D float features) and an id that keys its cached statistics."""
    module: nn.Module
    id: str
    name: str


def default_weights_path() -> Path:
    return paths.data_root() / "fid" / WEIGHTS_FILE


def weights_path(explicit: str | os.PathLike | None = None) -> Path:
    value = explicit or os.environ.get(ENV)
    return Path(value).expanduser() if value else default_weights_path()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_weights(path: Path, expected: str = WEIGHTS_SHA256) -> None:
    if not path.is_file():
        raise UserError(f"no Inception-v3 weights at {path}: {HOW_TO_GET}")
    digest = sha256_file(path)
    if digest != expected:
        raise UserError(f"{path} is not the Inception-v3 2015-12-05 weights file (SHA-256 {digest[:16]}..., expected "
                        f"{expected[:16]}...): {HOW_TO_GET}")


class _Pool2048(nn.Module):
    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, x_uint8):
        return self.extractor(x_uint8)[0]


def load_inception(path: Path, device="cpu", expected_sha256: str = WEIGHTS_SHA256) -> FeatureNet:
    """torch-fidelity's Inception-v3 with the weights at ``path`` (SHA-256 checked first), 2048-d pool features."""
    check_weights(path, expected_sha256)
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise UserError("FID needs torch-fidelity: pip install -e '.[fid]'") from None
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return FeatureNet(_Pool2048(net).to(device).eval(), expected_sha256[:12], "inception-v3-2015-12-05")


def _setup(net: FeatureNet, setup: FeatureSetup | None) -> FeatureSetup:
    return setup or eval_setup(next(net.module.parameters()).device)


@torch.inference_mode()
def features(net: FeatureNet, images_uint8: torch.Tensor, batch_size: int = 100,
             setup: FeatureSetup | None = None) -> np.ndarray:
    device = next(net.module.parameters()).device
    setup = _setup(net, setup)
    out = []
    for i in range(0, len(images_uint8), batch_size):
        with setup.autocast():
            out.append(net.module(images_uint8[i:i + batch_size].to(device)).double().cpu())
    return torch.cat(out).reshape(len(images_uint8), -1).numpy()


def _cache_stem(net: FeatureNet, dataset: str, max_images: int, setup: FeatureSetup) -> str:
    """Everything that changes the statistics: the reference images, the network's weights, device type, precision."""
    which = f"first{max_images}" if max_images else "all"
    return f"{dataset}-train-{which}-{net.name}-{net.id}-{setup.key}"


def reference_stats(net: FeatureNet, dataset: str, max_images: int = 0, root=None,
                    setup: FeatureSetup | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Feature statistics of the reference split (its first ``max_images`` images when > 0), computed once per
    dataset, network, device type and precision."""
    setup = _setup(net, setup)
    cache = paths.checkpoints_root() / "_fid" / f"{_cache_stem(net, dataset, max_images, setup)}.safetensors"
    if cache.is_file():
        t = load_file(cache)
        return t["mu"].numpy(), t["sigma"].numpy(), int(t["n"].item())
    images = real_splits(dataset, root)[0]
    if max_images:
        images = images[:max_images]
    mu, sigma = gaussian_stats(features(net, images, setup=setup))
    cache.parent.mkdir(parents=True, exist_ok=True)
    stats = {"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma), "n": torch.tensor(len(images))}
    atomic_write(cache, save_bytes(stats, metadata={"dataset": dataset, "network": net.name, "setup": setup.key}))
    return mu, sigma, len(images)


def fid(net: FeatureNet, images_uint8: torch.Tensor, dataset: str, ref_images: int = 0, root=None,
        labels: torch.Tensor | None = None, num_classes: int = 10, setup: FeatureSetup | None = None) -> dict:
    """FID of the images and its real-data floor at the same N and class counts (``labels``; floor.py)."""
    setup = _setup(net, setup)
    mu_r, sigma_r, n_ref = reference_stats(net, dataset, ref_images, root, setup)
    mu, sigma = gaussian_stats(features(net, images_uint8, setup=setup))
    value = round(frechet_distance(mu, sigma, mu_r, sigma_r), 4)
    counts = class_counts(labels, num_classes)
    cache = paths.checkpoints_root() / "_fid" / \
        f"{_cache_stem(net, dataset, ref_images, setup)}-floor-{layout_name(len(images_uint8), counts)}.json"
    floor, why = floor_distance(dataset, len(images_uint8), counts, lambda x: features(net, x, setup=setup),
                                (mu_r, sigma_r), cache, root)
    return {"fid": value, "fid_reference_images": n_ref, "fid_network": net.name, "fid_note": NOTE,
            "fid_floor": floor, "fid_ratio": ratio(value, floor),
            "fid_floor_note": f"no floor: {why}" if floor is None else FLOOR_NOTE}


def fetch(dest: Path | None = None) -> Path:
    """Download the weights once (needs internet) from torch-fidelity's release URL and check their SHA-256."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3 as url
    except ImportError:
        url = WEIGHTS_URL
    dest = Path(dest) if dest else weights_path()
    if dest.is_file() and sha256_file(dest) == WEIGHTS_SHA256:
        print(f"{dest}: already there, SHA-256 OK")
        return dest
    if dest.exists():
        raise UserError(f"{dest} exists and is not the Inception-v3 weights file: move it away first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        torch.hub.download_url_to_file(url, str(tmp), hash_prefix=None, progress=sys.stderr.isatty())
    except OSError as err:
        raise UserError(f"could not download {url} ({err}): is there internet here?") from err
    digest = sha256_file(tmp)
    if digest != WEIGHTS_SHA256:
        tmp.unlink(missing_ok=True)
        raise UserError(f"downloaded file has SHA-256 {digest}, expected {WEIGHTS_SHA256}: not keeping it")
    tmp.replace(dest)
    print(f"{dest}: SHA-256 OK; eval finds it there (or set {ENV}={dest})")
    return dest


if __name__ == "__main__":
    if sys.argv[1:2] != ["fetch"]:
        sys.exit("usage: python -m ddpm_hpc.metrics.fid fetch [DEST]")
    try:
        fetch(Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    except UserError as exc:
        sys.exit(f"error: {exc}")
