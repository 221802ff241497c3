"""What scores a set of samples, shared by ``eval`` and ``eval-sweep``: the classifier (conditional accuracy,
classifier FD) and, when the Inception weights are there, FID; each distance with its real-data floor (floor.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..logging_utils import log
from . import classifier, fid
from .floor import FeatureSetup, eval_setup


@dataclass
class Scorer:
    dataset: str
    clf: classifier.Classifier
    net: fid.FeatureNet | None  # None: FID skipped
    fid_skipped: str | None
    fid_ref_images: int
    setup: FeatureSetup

    def prepare(self) -> None:
        """The reference statistics (cached): here so that a missing dataset fails before any sampling."""
        classifier.reference_stats(self.clf, self.dataset, setup=self.setup)
        if self.net is not None:
            fid.reference_stats(self.net, self.dataset, self.fid_ref_images, setup=self.setup)

    def score(self, images: torch.Tensor, labels: torch.Tensor | None, log_fn=log) -> dict:
        out = classifier.score(self.clf, images, labels, self.dataset, setup=self.setup)
        out.update({"fid": None, "fid_reference_images": None, "fid_note": self.fid_skipped})
        if self.net is not None:
            log_fn(f"computing FID of {len(images)} images against the {self.dataset} reference on "
                   f"{self.setup.device}")
            out.update(fid.fid(self.net, images, self.dataset, self.fid_ref_images, labels=labels,
                               num_classes=self.clf.info["num_classes"], setup=self.setup))
        return out


def summary(result: dict) -> str:
    """``accuracy 99.00 %, classifier FD 1.23 (2.05x the real floor 0.6), FID ...``: one line of a result."""
    acc = result.get("conditional_accuracy")
    parts = [f"accuracy {'n/a' if acc is None else f'{acc:.2%}'}"]
    for name, key in (("classifier FD", "classifier_fd"), ("FID", "fid")):
        value, floor, r = result.get(key), result.get(f"{key}_floor"), result.get(f"{key}_ratio")
        if value is None:
            parts.append(f"{name} {'skipped' if key == 'fid' else 'n/a'}")
        elif r is None:
            parts.append(f"{name} {value:.4g} (no real floor)")
        else:
            parts.append(f"{name} {value:.4g} ({r:.2f}x the real floor {floor:.4g})")
    parts.append(f"{result.get('nfe_per_image')} NFE per image")
    return ", ".join(parts)


def _fid_network(fid_weights: str | None, device, log_fn) -> tuple[fid.FeatureNet | None, str | None]:
    """The Inception network, or (None, why FID is skipped) when no weights file is there and none was named."""
    path = fid.weights_path(fid_weights)
    if not path.is_file() and not fid_weights:
        message = f"FID skipped: no Inception-v3 weights at {path}: {fid.HOW_TO_GET}"
        log_fn(message)
        return None, message
    return fid.load_inception(path, device), None


def _classifier(dataset: str, device, log_fn) -> classifier.Classifier:
    if classifier.weights_path(dataset).exists():
        return classifier.load_classifier(dataset, device)  # a damaged one is an error, never silently replaced
    log_fn(f"no classifier for {dataset} yet: training it once (ddpm-hpc classifier {dataset})")
    clf = classifier.train_classifier(dataset, device=device, log_fn=log_fn)
    clf.model.to(device)
    return clf


def make_scorer(dataset: str, device: torch.device, fid_weights: str | None = None, fid_ref_images: int = 0,
                log_fn=log) -> Scorer:
    """Load (or train once) the classifier, load the Inception network if its weights are there, compute or read the
    reference statistics: everything that can fail before samples are drawn."""
    net, skipped = _fid_network(fid_weights, device, log_fn)
    scorer = Scorer(dataset, _classifier(dataset, device, log_fn), net, skipped, fid_ref_images, eval_setup(device))
    scorer.prepare()
    return scorer
