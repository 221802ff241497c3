"""The real-data floor of every distance (metrics/floor.py) and the keys of the cached feature statistics.

A small random conv net stands in for Inception-v3 (test_metrics.stand_in); the classifier is a briefly trained one.
The checks are structural (which images, which N and classes, which cache file), plus the closed form that a set's
distance to itself is 0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddpm_hpc.metrics import classifier, fid, floor
from ddpm_hpc.metrics.floor import FeatureSetup
from ddpm_hpc.metrics.frechet import frechet_distance, gaussian_stats

from test_metrics import stand_in

CPU32 = FeatureSetup(torch.device("cpu"), "fp32")


@pytest.fixture
def ckpts(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path))
    return tmp_path


def test_a_sets_distance_to_itself_is_zero(ckpts):
    net = stand_in()
    _, _, held, held_labels = floor.real_splits("digits")
    feats = fid.features(net, held[:200])
    mu, sigma = gaussian_stats(feats)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # the floor's own path: with the reference being exactly the images the floor picks, the floor is 0
    counts = [4] * 10
    idx, why = floor.floor_indices(held_labels, 40, counts)
    assert why == ""
    ref = gaussian_stats(fid.features(net, held[idx]))
    value, _ = floor.floor_distance("digits", 40, counts, lambda x: fid.features(net, x), ref, ckpts / "f.json")
    assert value == pytest.approx(0.0, abs=1e-6)
    # and an unrelated reference is far from 0
    other = gaussian_stats(fid.features(net, torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)))
    assert floor.floor_distance("digits", 40, counts, lambda x: fid.features(net, x), other, ckpts / "g.json")[0] > 0.01


def test_the_reference_and_the_floor_images_never_overlap():
    ref, ref_labels, held, held_labels = floor.real_splits("digits")
    assert len(ref) + len(held) == 1797 and len(held) == 359
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(floor.SPLIT_SEED))
    assert set(perm[:359].tolist()).isdisjoint(perm[359:].tolist())  # the split real_splits takes


def test_the_floor_uses_the_samples_n_and_class_counts(ckpts):
    """Uneven class counts: the floor images have exactly the samples' counts per class and their number."""
    _, _, _, held_labels = floor.real_splits("digits")
    labels = torch.tensor([0] * 7 + [3] * 2 + [9] * 5 + [4] * 1)
    counts = floor.class_counts(labels, 10)
    idx, _ = floor.floor_indices(held_labels, len(labels), counts)
    assert len(idx) == len(labels) and len(set(idx.tolist())) == len(idx)
    assert torch.bincount(held_labels[idx], minlength=10).tolist() == counts
    # through FID: what the floor was computed with is written next to it
    net = stand_in()
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8)
    result = fid.fid(net, images, "digits", labels=labels)
    [cache] = (ckpts / "_fid").glob("*-floor-*.json")
    data = json.loads(cache.read_text())
    assert data["n"] == len(labels) and data["class_counts"] == counts and data["floor"] == result["fid_floor"]
    assert result["fid_ratio"] == pytest.approx(result["fid"] / result["fid_floor"], rel=1e-3)
    # unconditional samples: the first N of the held-out permutation
    idx, _ = floor.floor_indices(held_labels, 30, None)
    assert len(idx) == 30


def test_no_floor_when_the_held_out_split_is_too_small(ckpts):
    """digits holds ~36 held-out images per class: 100 per class has no floor, and the eval says why."""
    net = stand_in()
    labels = torch.arange(10).repeat_interleave(100)
    images = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8)
    result = fid.fid(net, images, "digits", labels=labels)
    assert result["fid_floor"] is None and result["fid_ratio"] is None and result["fid"] > 0
    assert "held-out split has" in result["fid_floor_note"] and "the samples 100" in result["fid_floor_note"]


def test_changing_the_device_or_precision_makes_a_new_cache_file(ckpts, monkeypatch):
    net = stand_in()
    mu, _, _ = fid.reference_stats(net, "digits", setup=CPU32)
    assert [p.name for p in (ckpts / "_fid").iterdir()] == ["digits-train-all-random-stand-in-random0-cpu-fp32"
                                                            ".safetensors"]
    bf16 = FeatureSetup(torch.device("cpu"), "bf16")
    mu_bf16, _, _ = fid.reference_stats(net, "digits", setup=bf16)  # really computed in bf16 autocast
    assert len(list((ckpts / "_fid").iterdir())) == 2 and not np.array_equal(mu, mu_bf16)
    # a GPU in bf16 would be a third file (the name is all this machine can check)
    gpu = fid._cache_stem(net, "digits", 0, FeatureSetup(torch.device("cuda"), "bf16"))
    assert gpu.endswith("-cuda-bf16") and gpu != fid._cache_stem(net, "digits", 0, CPU32)
    # the same fields reuse the file: nothing is computed again
    monkeypatch.setattr(fid, "real_splits", lambda *a, **k: pytest.fail("reference statistics were recomputed"))
    again, _, _ = fid.reference_stats(net, "digits", setup=CPU32)
    np.testing.assert_array_equal(again, mu)


def test_classifier_statistics_are_keyed_too(ckpts, monkeypatch):
    clf = classifier.train_classifier("digits", steps=3, log_fn=lambda *_: None)
    folder = clf.path.parent
    classifier.reference_stats(clf, "digits", setup=CPU32)
    classifier.reference_stats(clf, "digits", setup=FeatureSetup(torch.device("cpu"), "bf16"))
    names = sorted(p.name for p in folder.glob("digits-ref-*"))
    assert names == [f"digits-ref-{clf.sha256[:12]}-cpu-bf16.safetensors",
                     f"digits-ref-{clf.sha256[:12]}-cpu-fp32.safetensors"]
    monkeypatch.setattr(classifier, "real_splits", lambda *a, **k: pytest.fail("recomputed"))
    classifier.reference_stats(clf, "digits", setup=CPU32)
    # a score writes the floor of its N and class layout beside them; another layout is another file
    monkeypatch.undo()
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(ckpts))
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    out = classifier.score(clf, x, torch.arange(10).repeat_interleave(2), "digits", setup=CPU32)
    assert out["floor_images"] == 20 and out["floor_class_counts"] == [2] * 10 and out["classifier_fd_floor"] > 0
    classifier.score(clf, x, None, "digits", setup=CPU32)
    floors = sorted(p.name.split("-cpu-fp32-")[1] for p in folder.glob("digits-floor-*.json"))
    assert floors == ["n20-2x10.json", "n20-uncond.json"]
