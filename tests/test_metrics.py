"""Sample-quality metrics: the Fréchet distance, the toolkit's classifier, the FID code path and the eval job.

No test downloads anything: the FID tests use a small *random* feature network standing in for Inception-v3 (and
torch-fidelity's real Inception module with random, unpickled-from-nothing weights for the wrapper), so they check
the code path, the caching and the weights checks, not FID values.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ddpm_hpc.data import load_dataset
from ddpm_hpc.errors import DatasetMissing, UserError
from ddpm_hpc.metrics import classifier, fid
from ddpm_hpc.metrics.frechet import frechet_distance, gaussian_stats


def _random_gaussian(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return rng.normal(size=d), a @ a.T / (rank or d) + (0 if rank else 1e-3 * np.eye(d))


def _scipy_reference(mu1, s1, mu2, s2):
    """The usual FID formula with scipy.linalg.sqrtm (the [test] extra installs scipy)."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# ----------------------------------------------------------------------------------------------------- Fréchet distance

@pytest.mark.parametrize("d", [1, 2, 8, 64])
def test_frechet_matches_scipy_sqrtm_on_random_gaussians(d):
    rng = np.random.default_rng(d)
    (mu1, s1), (mu2, s2) = _random_gaussian(rng, d), _random_gaussian(rng, d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_scipy_reference(mu1, s1, mu2, s2), rel=1e-8, abs=1e-9)
    assert ours == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric


def test_frechet_closed_forms():
    rng = np.random.default_rng(0)
    mu, s = _random_gaussian(rng, 16)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)  # equal -> 0
    shift = rng.normal(size=16)
    assert frechet_distance(mu, s, mu + shift, s) == pytest.approx(float(shift @ shift), rel=1e-9)  # |dmu|^2
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)  # diagonal: sum (sqrt a - sqrt b)^2
    expected = float(shift @ shift + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(mu, np.diag(a), mu + shift, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_frechet_is_stable_for_singular_covariances():
    """Fewer samples than dimensions (rank-deficient covariances): finite, non-negative, real, and the closed form
    for diagonal matrices with zeros still holds, where sqrtm of the product needs an eps offset."""
    rng = np.random.default_rng(1)
    (mu1, s1), (mu2, s2) = _random_gaussian(rng, 50, rank=5), _random_gaussian(rng, 50, rank=7)
    d = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d) and d >= 0
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-7)
    a = np.array([0.0, 1.0, 4.0, 0.0])
    b = np.array([1.0, 0.0, 1.0, 0.0])
    z = np.zeros(4)
    assert frechet_distance(z, np.diag(a), z, np.diag(b)) == pytest.approx(1.0 + 1.0 + 1.0, abs=1e-9)


def test_gaussian_stats_and_torch_inputs():
    x = torch.randn(200, 6, dtype=torch.float32)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == np.float64 and sigma.shape == (6, 6)
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False), rtol=1e-12)
    assert frechet_distance(torch.from_numpy(mu), torch.from_numpy(sigma), mu, sigma) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ----------------------------------------------------------------------------------------------------------------- FID

class RandomFeatures(torch.nn.Module):
    """A small random conv net standing in for Inception-v3 (uint8 N x 3 x 32 x 32 -> N x 32 features)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(),
                                       torch.nn.Conv2d(16, 32, 3, stride=2), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        return self.net(x.float() / 127.5 - 1)


def stand_in() -> fid.FeatureNet:
    return fid.FeatureNet(RandomFeatures().eval(), "random0", "random-stand-in")


def test_fid_code_path_with_a_random_network_standing_in_for_inception(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path))
    real = load_dataset("digits").images
    net = stand_in()
    same = fid.fid(net, real[:600], "digits")
    noise = fid.fid(net, torch.randint(0, 256, (600, 3, 32, 32), dtype=torch.uint8), "digits")
    assert same["fid_reference_images"] == 1438 and "fid_note" in same  # digits: the 80 % not held out (floor.py)
    assert 0 <= same["fid"] < noise["fid"] / 10  # real digits are far closer to digits than noise is
    cached = list((tmp_path / "_fid").glob("digits-train-all-random-stand-in-random0-cpu-fp32.safetensors"))
    assert len(cached) == 1 and load_file(cached[0])["sigma"].dtype == torch.float64
    monkeypatch.setattr(fid, "real_splits", lambda *a, **k: pytest.fail("reference statistics were recomputed"))
    assert fid.fid(net, real[:600], "digits") == same  # from the cache
    # a reference subset is another cache entry
    monkeypatch.undo()
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path))
    assert fid.fid(net, real[:600], "digits", ref_images=500)["fid_reference_images"] == 500


def test_fid_weights_are_found_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_HPC_DATA", str(tmp_path / "data"))
    monkeypatch.delenv(fid.ENV, raising=False)
    assert fid.weights_path() == tmp_path / "data" / "fid" / fid.WEIGHTS_FILE
    with pytest.raises(UserError, match="make fid-weights") as err:
        fid.load_inception(fid.weights_path())
    assert "\n" not in str(err.value)
    fake = tmp_path / "inception.pth"
    fake.write_bytes(b"not the weights")
    monkeypatch.setenv(fid.ENV, str(fake))
    assert fid.weights_path() == fake and fid.weights_path(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(UserError, match="SHA-256"):
        fid.load_inception(fake)


def test_fetch_never_replaces_another_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded over a file"))
    dest = tmp_path / "notes.pth"
    dest.write_text("my notes")
    with pytest.raises(UserError, match="move it away"):
        fid.fetch(dest)
    assert dest.read_text() == "my notes"


def test_torch_fidelity_inception_wrapper(tmp_path, monkeypatch):
    """torch-fidelity's real Inception-v3 module (299 px TF resize, uint8 in, 2048 features out), with its random
    initial weights: the published weights cannot be fetched here."""
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    monkeypatch.setattr(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    weights = tmp_path / "random.pth"
    torch.save({}, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    net = fid.load_inception(weights, expected_sha256=digest)
    feats = fid.features(net, torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    assert feats.shape == (3, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()


# ---------------------------------------------------------------------------------------------------------- classifier

@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory) -> classifier.Classifier:
    out = tmp_path_factory.mktemp("classifiers") / "digits.safetensors"
    return classifier.train_classifier("digits", steps=250, log_fn=lambda *_: None, out=out)


def test_classifier_scores_real_digits_high_and_noise_at_chance(digits_classifier):
    clf = digits_classifier
    assert clf.info["heldout_accuracy"] >= 0.95 and clf.info["heldout_images"] == 359
    digits = load_dataset("digits")
    real = classifier.score(clf, digits.images, digits.labels, "digits")
    assert real["conditional_accuracy"] >= 0.97
    labels = torch.arange(1000) % 10
    noise = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fake = classifier.score(clf, noise, labels, "digits")
    assert fake["conditional_accuracy"] <= 0.25
    assert fake["classifier_fd"] > 10 * real["classifier_fd"]
    assert "NOT comparable to published FID" in real["classifier_note"]


def test_classifier_is_not_replaced_without_force(digits_classifier, tmp_path, monkeypatch, capsys):
    """Retraining changes the weights' SHA-256, so earlier classifier FDs would no longer compare: refused, and the
    file kept, unless --force."""
    from ddpm_hpc.cli import main

    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path))
    target = classifier.weights_path("digits")
    target.parent.mkdir(parents=True)
    for f in (digits_classifier.path, digits_classifier.path.with_suffix(".json")):
        shutil.copy(f, target.parent / f.name)
    before = target.read_bytes()
    assert main(["classifier", "digits", "--steps", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--force" in err and digits_classifier.sha256[:12] in err
    assert target.read_bytes() == before
    assert main(["classifier", "digits", "--steps", "2", "--device", "cpu", "--force"]) == 0
    info = json.loads(target.with_suffix(".json").read_text())
    assert info["steps"] == 2 and info["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert info["sha256"] != digits_classifier.sha256


def test_classifier_files_round_trip_and_are_checked(digits_classifier, tmp_path):
    src = digits_classifier.path
    for f in (src, src.with_suffix(".json")):
        shutil.copy(f, tmp_path / f.name)
    loaded = classifier.load_classifier("digits", path=tmp_path / src.name)
    x = load_dataset("digits").images[:50]
    torch.testing.assert_close(classifier.predict(loaded.model, x)[0],
                               classifier.predict(digits_classifier.model, x)[0])
    info = json.loads((tmp_path / "digits.json").read_text())
    assert info["sha256"] == loaded.sha256 and info["arch"] == classifier.ARCH
    data = bytearray((tmp_path / src.name).read_bytes())
    data[-1] ^= 1
    (tmp_path / src.name).write_bytes(bytes(data))
    with pytest.raises(UserError, match="SHA-256"):
        classifier.load_classifier("digits", path=tmp_path / src.name)
    with pytest.raises(UserError, match="ddpm-hpc classifier mnist"):
        classifier.load_classifier("mnist", path=tmp_path / "mnist.safetensors")


# ---------------------------------------------------------------------------------------------------------------- eval

TINY = """description: tiny conditional flow model for the eval test
data: {dataset: digits, batch_size: 8}
model: {arch: unet, channels: [8, 16], conditioning: embedding, time_embedding: true, norm: group}
diffusion: {objective: flow}
train: {steps: 6, lr: 0.001, ema_decay: 0.9, label_dropout: 0.1, log_every: 3, checkpoint_every: 6, device: cpu}
sample: {sampler: euler, steps: 3, guidance: 2.0, per_class: 1, batch_size: 64}
"""

FIELDS = {"experiment", "tag", "n", "checkpoint", "checkpoint_sha256", "step", "weights", "dataset", "sampler",
          "steps", "eta", "guidance", "nfe_per_image", "seed", "conditional_accuracy", "predicted_class_counts",
          "classifier", "classifier_fd", "classifier_note", "fid", "fid_reference_images", "fid_note", "created"}


def test_eval_on_a_tiny_checkpoint_writes_all_fields(tmp_path, monkeypatch, digits_classifier):
    from ddpm_hpc.cli import main
    from ddpm_hpc.config import load_experiment
    from ddpm_hpc.metrics import eval as ev
    from ddpm_hpc.trainer import train

    for name, path in (("EXPERIMENTS", "exp"), ("CHECKPOINTS", "ckpt"), ("DATA", "data")):
        monkeypatch.setenv(f"DDPM_HPC_{name}", str(tmp_path / path))
    monkeypatch.delenv(fid.ENV, raising=False)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "tiny.yaml").write_text(TINY)
    (tmp_path / "ckpt" / "_classifiers").mkdir(parents=True)
    for f in (digits_classifier.path, digits_classifier.path.with_suffix(".json")):
        shutil.copy(f, tmp_path / "ckpt" / "_classifiers" / f.name)
    assert train(load_experiment("tiny"), log_fn=lambda *_: None).status == "finished"

    # no FID weights: the FID is skipped with the one-line hint, everything else is there
    assert main(["eval", "tiny", "--n", "30"]) == 0
    out = tmp_path / "exp" / "tiny" / "eval" / "fresh-step0000006-euler3-w2-n30-seed1234.json"
    result = json.loads(out.read_text())
    assert result["tag"] == "step0000006-euler3-w2-n30-seed1234" and result["source"] == "checkpoint"
    assert FIELDS <= set(result), FIELDS - set(result)
    assert result["n"] == 30 and result["step"] == 6 and result["weights"] == "ema"
    assert (result["sampler"], result["steps"], result["guidance"], result["nfe_per_image"]) == ("euler", 3, 2.0, 6)
    assert 0 <= result["conditional_accuracy"] <= 1 and sum(result["predicted_class_counts"]) == 30
    assert result["classifier_fd"] >= 0 and result["classifier"]["sha256"] == digits_classifier.sha256
    assert result["fid"] is None and "make fid-weights" in result["fid_note"]

    # with "weights" (the random stand-in network in place of Inception), sampler settings from overrides
    fake = tmp_path / "weights.pth"
    fake.write_bytes(b"x")
    monkeypatch.setattr(ev.fid, "load_inception", lambda path, device: stand_in())
    path = ev.run_eval(load_experiment("tiny", ["sample.steps=2", "sample.guidance=1.0"]), n=20,
                       fid_weights=str(fake), log_fn=lambda *_: None)
    result = json.loads(path.read_text())
    assert path.name == "fresh-step0000006-euler2-n20-seed1234.json"
    assert result["fid"] >= 0 and result["fid_reference_images"] == 1438 and result["nfe_per_image"] == 2
    assert result["fid_floor"] > 0 and result["fid_ratio"] == pytest.approx(result["fid"] / result["fid_floor"], 1e-3)

    # an explicitly named weights file that is missing is an error, not a silent skip, and found before sampling
    monkeypatch.undo()
    for name, p in (("EXPERIMENTS", "exp"), ("CHECKPOINTS", "ckpt"), ("DATA", "data")):
        monkeypatch.setenv(f"DDPM_HPC_{name}", str(tmp_path / p))
    monkeypatch.setattr(ev, "sample_images", lambda *a, **k: pytest.fail("sampled before checking what eval needs"))
    assert main(["eval", "tiny", "--n", "10", "--fid-weights", str(tmp_path / "missing.pth")]) == 2
    # so is a training set that the reference statistics need (a checkpoint pulled to a laptop without the data)

    def no_data(*_a, **_k):
        raise DatasetMissing("digits: not on disk")

    monkeypatch.setattr(ev.classifier, "reference_stats", no_data)
    assert main(["eval", "tiny", "--n", "10"]) == 2

    # the same evaluation again is refused (before sampling) unless --force: the file is never silently replaced
    before = out.read_bytes()
    assert main(["eval", "tiny", "--n", "30"]) == 2
    assert out.read_bytes() == before
    monkeypatch.undo()
    for name, p in (("EXPERIMENTS", "exp"), ("CHECKPOINTS", "ckpt"), ("DATA", "data")):
        monkeypatch.setenv(f"DDPM_HPC_{name}", str(tmp_path / p))
    out.write_text('{"old": true}')
    assert main(["eval", "tiny", "--n", "30", "--force"]) == 0
    fresh = json.loads(out.read_text())
    assert FIELDS <= set(fresh)

    # the grid of the same tag holds the same images (classes in blocks in both): the same scores
    assert main(["sample", "tiny", "sample.per_class=3"]) == 0
    assert main(["eval", "tiny", "--samples", "step0000006-euler3-w2-n30-seed1234"]) == 0
    from_grid = json.loads((out.parent / "samples-step0000006-euler3-w2-n30-seed1234.json").read_text())
    for key in ("conditional_accuracy", "predicted_class_counts", "classifier_fd"):
        assert from_grid[key] == fresh[key], key


def test_part_of_a_grid_takes_the_classes_in_turn():
    from ddpm_hpc.metrics.eval import balanced_subset

    grid = torch.arange(3).repeat_interleave(3)  # a grid's labels: 0 0 0 1 1 1 2 2 2
    assert balanced_subset(grid, 5).tolist() == [0, 1, 3, 4, 6]
    assert balanced_subset(grid, 9).tolist() == list(range(9))
    uneven = torch.tensor([2, 2, 0, 1, 1, 1])
    assert sorted(uneven[balanced_subset(uneven, 3)].tolist()) == [0, 1, 2]


def test_eval_reads_existing_sample_files(tmp_path, monkeypatch, digits_classifier):
    from ddpm_hpc.config import build_experiment
    from ddpm_hpc.metrics.eval import run_eval
    from ddpm_hpc.sampling import Sampled, write_samples

    monkeypatch.setenv("DDPM_HPC_EXPERIMENTS", str(tmp_path / "exp"))
    monkeypatch.setenv("DDPM_HPC_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.delenv(fid.ENV, raising=False)
    monkeypatch.setenv("DDPM_HPC_DATA", str(tmp_path / "data"))
    (tmp_path / "ckpt" / "_classifiers").mkdir(parents=True)
    for f in (digits_classifier.path, digits_classifier.path.with_suffix(".json")):
        shutil.copy(f, tmp_path / "ckpt" / "_classifiers" / f.name)
    digits = load_dataset("digits")
    info = {"sampler": "heun", "steps": 10, "guidance": 2.0, "nfe_per_image": 38, "step": 100, "seed": 1}
    write_samples(tmp_path / "exp" / "real" / "samples", "step0000100-heun10-w2-seed1",
                  Sampled(digits.images[:40], digits.labels[:40], [], 38, 0.0), info, nrow=10)
    exp = build_experiment("real", {"data": {"dataset": "digits"},
                                    "model": {"arch": "unet", "conditioning": "embedding"}}, "test")
    path = run_eval(exp, samples="step0000100-heun10-w2-seed1", log_fn=lambda *_: None)
    result = json.loads(path.read_text())
    assert path.name == "samples-step0000100-heun10-w2-seed1.json" and result["tag"] == "step0000100-heun10-w2-seed1"
    assert result["source"] == "samples" and result["n"] == 40 and result["nfe_per_image"] == 38
    assert result["conditional_accuracy"] >= 0.95 and result["sampler"] == "heun"
    samples = tmp_path / "exp" / "real" / "samples" / "step0000100-heun10-w2-seed1.safetensors"
    assert result["samples_sha256"] == hashlib.sha256(samples.read_bytes()).hexdigest()
    assert result["classifier"]["sha256"] == digits_classifier.sha256  # which classifier the FD belongs to
    # the first 20 of them are another evaluation, in another file
    path = run_eval(exp, n=20, samples="step0000100-heun10-w2-seed1", log_fn=lambda *_: None)
    assert path.name == "samples-step0000100-heun10-w2-seed1-first20.json" and json.loads(path.read_text())["n"] == 20
    # more than the file holds: all of them, and it says so
    said = []
    path = run_eval(exp, n=500, samples="step0000100-heun10-w2-seed1", force=True, log_fn=said.append)
    assert path.name == "samples-step0000100-heun10-w2-seed1.json" and json.loads(path.read_text())["n"] == 40
    assert any("holds 40 images: scoring all of them, not 500" in line for line in said)
    # files that are not sample grids are one-line errors
    (tmp_path / "notes.safetensors").write_text("not safetensors")
    with pytest.raises(UserError, match="not a safetensors file"):
        run_eval(exp, samples=str(tmp_path / "notes.safetensors"), log_fn=lambda *_: None)
    write_samples(tmp_path / "exp" / "real" / "samples", "one", Sampled(digits.images[:1], None, [], 1, 0.0), {},
                  nrow=1)
    with pytest.raises(UserError, match="N >= 2"):
        run_eval(exp, samples="one", log_fn=lambda *_: None)
