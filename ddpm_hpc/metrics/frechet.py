"""Fréchet distance between two Gaussians N(mu1, S1) and N(mu2, S2), and Gaussian statistics of feature sets.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

How ``tr((S1 S2)^{1/2})`` is computed, and why: S1 S2 is not symmetric, and the usual ``scipy.linalg.sqrtm(S1 @ S2)``
(Schur method) can return complex values or NaNs for singular or near-singular covariances, which FID code then
papers over with an ``eps * I`` offset. But S1 S2 = S1^{1/2} (S1^{1/2} S2 S1^{1/2}) S1^{-1/2} is similar to the
symmetric positive semi-definite matrix M = S1^{1/2} S2 S1^{1/2}, so they have the same eigenvalues and

    tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i(M)).

Both square roots therefore come from symmetric eigendecompositions (``numpy.linalg.eigh``), which are backward
stable, real and need no inverse. Everything runs in float64; eigenvalues that rounding pushes slightly below zero
(rank-deficient covariances, e.g. fewer samples than feature dimensions) are clipped to zero.
"""

from __future__ import annotations

import numpy as np
import torch


def _as64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh; negative rounding-noise eigenvalues -> 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = _as64(mu1).reshape(-1), _as64(mu2).reshape(-1)
    s1, s2 = np.atleast_2d(_as64(sigma1)), np.atleast_2d(_as64(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r1 = _psd_sqrt(s1)
    m = r1 @ ((s2 + s2.T) / 2) @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    d = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * tr_covmean
    return max(d, 0.0)  # it is a squared distance; only rounding can take it below zero


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N-1) covariance of N x D features, in float64."""
    f = _as64(features)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need an N x D array with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
