"""Sample-quality figures from features: FID, KID, precision/recall, MS-SSIM diversity.

Pure math, no I/O: features in (numpy (N, D) arrays, e.g. Inception pool3 from
began.train.inception), figures out. Used by `began eval` and, on a few hundred
samples, by training's quality tracking:

    fid(real_feats, fake_feats)                    -> float
    kid(real_feats, fake_feats, subsets, size)     -> (mean, std)
    precision_recall(real_feats, fake_feats, k=3)  -> (precision, recall)
    mean_pairwise_msssim(uint8 NHWC images, pairs) -> float (needs torch + pytorch-msssim)

Only `mean_pairwise_msssim` imports torch (lazily); the rest is numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FeatureStats",
    "feature_stats",
    "fid",
    "frechet_distance",
    "kid",
    "mean_pairwise_msssim",
    "mmd2_unbiased",
    "precision_recall",
    "sqrtm_psd",
    "trace_sqrtm_product",
]


def _as2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{name} must be an (N >= 2, D) array of features, got shape {a.shape}")
    return a


# ----------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------


class FeatureStats:
    """Mean and covariance of a feature set, and how many rows made them."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, count: int):
        self.mu, self.sigma, self.count = mu, sigma, int(count)


def feature_stats(feats: np.ndarray) -> FeatureStats:
    f = _as2d(feats, "features")
    return FeatureStats(f.mean(0), np.atleast_2d(np.cov(f, rowvar=False)), len(f))


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    a = np.asarray(a, dtype=np.float64)
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrtm_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr(sqrtm(s1 @ s2)) for covariances s1, s2.

    s1 @ s2 is not symmetric, but it is similar to sqrt(s1) s2 sqrt(s1), which is
    symmetric PSD: same eigenvalues, so the trace of the square root is the sum of
    their square roots. Two symmetric eigendecompositions instead of scipy's
    general Schur-based sqrtm: no complex parts to discard, and stable when the
    covariances are singular (fewer samples than feature dimensions).
    """
    r = sqrtm_psd(s1)
    m = r @ np.asarray(s2, dtype=np.float64) @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b))."""
    d = a.mu - b.mu
    tr = np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * trace_sqrtm_product(a.sigma, b.sigma)
    return float(d @ d + tr)


def _fid_low_rank(x: np.ndarray, y: np.ndarray) -> float:
    """FID from the rows themselves, for fewer rows than dimensions.

    With centred rows A (m, d) and B (n, d), S_x = A'A / (m-1) and S_y = B'B / (n-1),
    and the nonzero eigenvalues of S_x S_y are those of (A B')(A B')' / ((m-1)(n-1)):
    tr sqrtm(S_x S_y) is the sum of the singular values of A B' over
    sqrt((m-1)(n-1)). An (m, n) SVD instead of (d, d) eigendecompositions: a few
    hundred samples in 2048-d cost milliseconds, not seconds.
    """
    a, b = x - x.mean(0), y - y.mean(0)
    m, n = len(a), len(b)
    sv = np.linalg.svd(a @ b.T, compute_uv=False)
    tr_sqrt = sv.sum() / np.sqrt((m - 1) * (n - 1))
    d = x.mean(0) - y.mean(0)
    return float(d @ d + (a * a).sum() / (m - 1) + (b * b).sum() / (n - 1) - 2.0 * tr_sqrt)


def fid(real: np.ndarray | FeatureStats, fake: np.ndarray | FeatureStats) -> float:
    """Frechet Inception Distance between two feature sets (or their precomputed stats)."""
    if not isinstance(real, FeatureStats) and not isinstance(fake, FeatureStats):
        x, y = _as2d(real, "real features"), _as2d(fake, "fake features")
        if max(len(x), len(y)) <= x.shape[1]:
            return _fid_low_rank(x, y)
    a = real if isinstance(real, FeatureStats) else feature_stats(real)
    b = fake if isinstance(fake, FeatureStats) else feature_stats(fake)
    return frechet_distance(a, b)


# ----------------------------------------------------------------------------
# KID (Binkowski et al. 2018)
# ----------------------------------------------------------------------------


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T: the product in float32 (2-4x faster on a CPU, and thousands of
    2048-d features make it the whole cost), the result in float64 for the sums."""
    return (a.astype(np.float32) @ b.astype(np.float32).T).astype(np.float64)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3, the kernel KID is defined with."""
    return (_gram(x, y) / x.shape[1] + 1.0) ** 3


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples x (m, d) and y (n, d) with the cubic polynomial kernel:
    the within-set means leave out the diagonal (k(x_i, x_i))."""
    x, y = _as2d(x, "x"), _as2d(y, "y")
    return _mmd2_from_kernels(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))


# Up to this many entries per kernel matrix (200 MB in float64), KID computes the kernels
# of the whole sets once and slices every subset out of them: 100 subsets then cost three
# matrix products instead of 300.
KID_FULL_KERNEL_MAX = 25_000_000


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, full_kernel_max: int = KID_FULL_KERNEL_MAX) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of the unbiased MMD^2 over `subsets`
    random subsets of min(subset_size, len(real), len(fake)) rows from each set
    (drawn without replacement within a subset)."""
    real, fake = _as2d(real, "real features"), _as2d(fake, "fake features")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    full = max(len(real), len(fake)) ** 2 <= full_kernel_max
    if full:
        kxx, kyy, kxy = (_poly_kernel(real, real), _poly_kernel(fake, fake),
                         _poly_kernel(real, fake))
    vals = []
    for _ in range(subsets):
        i = rng.choice(len(real), size, replace=False)
        j = rng.choice(len(fake), size, replace=False)
        vals.append(_mmd2_from_kernels(kxx[np.ix_(i, i)], kyy[np.ix_(j, j)], kxy[np.ix_(i, j)])
                    if full else mmd2_unbiased(real[i], fake[j]))
    return float(np.mean(vals)), float(np.std(vals))


# ----------------------------------------------------------------------------
# Precision and recall (Kynkaanniemi et al. 2019)
# ----------------------------------------------------------------------------


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * _gram(a, b)
    return np.maximum(d, 0.0)


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d = _sq_dists(x[i:i + chunk], x)
        # the row itself is at distance 0 and takes place 0: the k-th other is at index k
        out[i:i + chunk] = np.partition(d, k, axis=1)[:, k]
    return out


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int) -> float:
    """Fraction of `points` inside at least one ball (centre, radius) of the other set."""
    inside = 0
    for i in range(0, len(points), chunk):
        d = _sq_dists(points[i:i + chunk], centres)
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / len(points)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Each set's manifold is the union of balls around its points, each reaching
    that point's k-th nearest neighbour in the same set. Precision: the fraction
    of fakes inside the real manifold (are samples realistic?). Recall: the
    fraction of reals inside the fake manifold (is the data covered? a collapsed
    generator has low recall).
    """
    real, fake = _as2d(real, "real features"), _as2d(fake, "fake features")
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k must be in 1..{min(len(real), len(fake)) - 1}, got {k}")
    precision = _coverage(fake, real, _knn_radii(real, k, chunk), chunk)
    recall = _coverage(real, fake, _knn_radii(fake, k, chunk), chunk)
    return precision, recall


# ----------------------------------------------------------------------------
# Diversity: mean pairwise MS-SSIM
# ----------------------------------------------------------------------------

# pytorch-msssim's 5-scale MS-SSIM (11-px window, 4 halvings) wants a side > 160 px.
MSSSIM_MIN_SIDE = 161
MSSSIM_SIDE = 176  # 11 * 16: every halving stays a whole number of pixels


def random_pairs(n: int, pairs: int, seed: int = 0) -> np.ndarray:
    """(pairs, 2) index pairs i != j drawn uniformly from range(n)."""
    if n < 2:
        raise ValueError("need at least two images for pairs")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n  # never i itself
    return np.stack([i, j], 1)


def mean_pairwise_msssim(images: np.ndarray, pairs: int = 1000, seed: int = 0,
                         batch: int = 64, device: str = "cpu") -> float:
    """Mean MS-SSIM over random pairs of distinct images (N, H, W, 3) uint8.

    Lower means more varied. Images smaller than 161 px are upscaled (bilinear)
    to 176 px first, so the standard 5-scale MS-SSIM (window 11, sigma 1.5, the
    usual scale weights) applies unchanged at every resolution: pytorch-msssim
    refuses smaller images for its 4 halvings, and a home-made fewer-scale
    variant would not be the figure others report. Samples and real images go
    through the same resize, so their figures compare.
    """
    import torch
    import torch.nn.functional as F
    from pytorch_msssim import ms_ssim

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    idx = random_pairs(len(images), pairs, seed)
    side = min(images.shape[1:3])
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(idx), batch):
            ij = idx[s:s + batch]
            x = torch.from_numpy(np.ascontiguousarray(images[ij.ravel()])).to(device)
            x = x.permute(0, 3, 1, 2).float()
            if side < MSSSIM_MIN_SIDE:
                x = F.interpolate(x, size=(MSSSIM_SIDE, MSSSIM_SIDE), mode="bilinear",
                                  align_corners=False)
            x = x.view(len(ij), 2, *x.shape[1:])
            v = ms_ssim(x[:, 0], x[:, 1], data_range=255, size_average=False)
            total += float(v.double().sum())
    return total / len(idx)
