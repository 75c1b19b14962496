"""Mode coverage without labels: NDB, the number of statistically different bins.

Richardson and Weiss 2018 ("On GANs and GMMs", NeurIPS): cut the real images into K
bins by k-means on their pixels, put every real image and every sample into its
nearest bin, and test each bin's share among the samples against its share among the
reals (two-proportion z-test, pooled proportion, two-sided, alpha 0.05). A generator
that draws every kind of image in its data leaves about alpha * K bins different by
chance; one that has dropped modes empties their bins and overfills others.

    bins = Bins.fit(reals, k=50, seed=0)   # k-means++ then a fixed number of Lloyd steps
    bins.compare(samples)                  # -> {"bins", "different", "ndb_k", "js",
                                           #     "covered", "reals", "samples", ...}
    ndb(reals, samples, k=50)              # both at once

Images are (N, H, W, C) arrays, uint8 or floats in [-1, 1] (G's range); each is
box-averaged down to at most 32 px a side and flattened to [0, 1] pixels: NDB is a
pixel-space test, and 3,072 numbers describe a 32x32 RGB image's layout and colour
well enough to tell a shoe from a shirt while keeping the distances cheap.

Besides the paper's figures: `js` is the Jensen-Shannon divergence of the two bin
histograms in bits (0: same shares, 1: no bin in common), and `covered` counts the
bins holding at least half (COVER_RATIO) of their real share among the samples. The
reals cover every bin by construction (each bin has its nearest real images), so
covered / K is the share of the data's bins the samples reach, 1 for samples like
the data and 1/K for one image drawn for every z. Half rather than "any": a
collapsed G's few stray samples do not count as covering a mode, while a bin
expecting 16 samples falls under 8 by chance only rarely.

Measured on Fashion-MNIST test images (32x32; 2,000 vs 2,000, K = 50, 3 k-means
seeds): disjoint images of all ten classes: 0-3 bins different, 49-50 covered, JS
0.008-0.009; one class (t-shirts; sneakers): 47-50 different, 12-13 (8) covered; six
classes: 39-41 and 27-30; the previous embedded model (three classes): 46-49 and 11-14; one
image: 50 and 1.

Pure numpy, deterministic for a seed; 2,000 vs 2,000 32x32x3 images take under a
second on one CPU core.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ALPHA", "Bins", "COVER_RATIO", "covered_bins", "different_bins",
           "flat_pixels", "js_divergence", "kmeans", "ndb", "nearest"]

ALPHA = 0.05  # the paper's significance level, two-sided
MAX_SIDE = 32  # images are box-averaged down to at most this many pixels a side
KMEANS_ITERS = 20  # Lloyd steps after k-means++: fixed, so the cost is known in advance
COVER_RATIO = 0.5  # a bin is covered when samples give it >= this share of its real share
CHUNK = 1024  # rows per distance block (bounds memory at CHUNK x K floats)


def flat_pixels(images: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """(N, H, W, C) uint8 or [-1, 1] floats -> (N, D) float32 in [0, 1], box-averaged
    by a whole factor so that no side exceeds `max_side` (a ragged edge is cropped)."""
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {x.shape}")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else (x.astype(np.float32) + 1) / 2
    n, h, w, c = x.shape
    f = max(1, -(-max(h, w) // max_side))
    if f > 1:
        h, w = h // f, w // f
        x = x[:, :h * f, :w * f].reshape(n, h, f, w, f, c).mean(axis=(2, 4))
    return np.ascontiguousarray(x.reshape(n, -1), dtype=np.float32)


def _sq_dists(x: np.ndarray, c: np.ndarray, c_sq: np.ndarray) -> np.ndarray:
    """|x - c|^2 for every row of x and of c, as |x|^2 - 2 x.c + |c|^2 (one matrix product)."""
    d = (x * x).sum(1, dtype=np.float64)[:, None] - 2.0 * (x @ c.T) + c_sq[None, :]
    return np.maximum(d, 0.0)


def nearest(x: np.ndarray, centroids: np.ndarray, chunk: int = CHUNK
            ) -> tuple[np.ndarray, np.ndarray]:
    """Index of each row's nearest centroid, and the squared distance to it."""
    c = np.asarray(centroids, dtype=np.float32)
    c_sq = (c * c).sum(1, dtype=np.float64)
    labels = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float64)
    for i in range(0, len(x), chunk):
        d = _sq_dists(x[i:i + chunk], c, c_sq)
        labels[i:i + chunk] = d.argmin(1)
        dist[i:i + chunk] = d[np.arange(len(d)), labels[i:i + chunk]]
    return labels, dist


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding: each next centre is the best of a few candidates drawn
    with probability ~ squared distance to the nearest centre so far (the one that lowers
    the total most). Plain k-means++ often puts two centres in one of many separated
    clusters and none in another, which Lloyd's steps cannot undo."""
    trials = 2 + int(math.log(k))
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = x[rng.integers(len(x))]
    d2 = nearest(x, centres[:1])[1]
    for j in range(1, k):
        total = d2.sum()
        if total <= 0:  # every row already sits on a centre (duplicates): any will do
            centres[j] = x[rng.integers(len(x))]
            continue
        cand = rng.choice(len(x), trials, p=d2 / total)
        c = x[cand]
        to_cand = _sq_dists(x, c, (c * c).sum(1, dtype=np.float64))  # (N, trials)
        after = np.minimum(d2[:, None], to_cand)
        best = int(after.sum(0).argmin())
        centres[j], d2 = c[best], after[:, best]
    return centres


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = KMEANS_ITERS) -> np.ndarray:
    """(k, D) centroids of the rows of x: k-means++ then `iters` Lloyd steps (fewer when the
    assignment stops changing). An emptied cluster takes the row farthest from its centre,
    so every centroid keeps at least one row of x."""
    x = np.asarray(x, dtype=np.float32)
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in 1..{len(x)} (the number of rows), got {k}")
    c = _kmeans_pp(x, k, np.random.default_rng(seed))
    labels = None
    for _ in range(iters):
        new, dist = nearest(x, c)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = labels == j
            if members.any():
                c[j] = x[members].mean(0)
            else:  # steal the worst-fitting row; its distance is spent so no other takes it
                far = int(dist.argmax())
                c[j], labels[far], dist[far] = x[far], j, -1.0
    return c


def different_bins(real_counts: np.ndarray, sample_counts: np.ndarray,
                   alpha: float = ALPHA) -> np.ndarray:
    """Bins whose share among the samples differs from the real share: a two-proportion
    z-test per bin with the pooled proportion, two-sided, at significance `alpha`."""
    r = np.asarray(real_counts, dtype=np.float64)
    s = np.asarray(sample_counts, dtype=np.float64)
    n_r, n_s = r.sum(), s.sum()
    pooled = (r + s) / (n_r + n_s)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_r + 1 / n_s))
    diff = np.abs(r / n_r - s / n_s)
    z = np.divide(diff, se, out=np.zeros_like(diff), where=se > 0)  # no one in it: no test
    p = np.array([math.erfc(v / math.sqrt(2)) for v in z])  # two-sided normal tail
    return p < alpha


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence between two histograms (normalised here), in bits."""
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    q = np.asarray(q, dtype=np.float64) / np.sum(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0  # 0 log 0 = 0; m > 0 wherever a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return max(0.0, (kl(p) + kl(q)) / 2)


def covered_bins(real_counts: np.ndarray, sample_counts: np.ndarray,
                 ratio: float = COVER_RATIO) -> np.ndarray:
    """Bins holding at least `ratio` of their real share among the samples (and one sample).
    Relative to the real share, so a bin of rare images counts as covered by few samples."""
    r = np.asarray(real_counts, dtype=np.float64)
    s = np.asarray(sample_counts, dtype=np.float64)
    return (s > 0) & (s / s.sum() >= ratio * r / r.sum())


class Bins:
    """k-means bins fitted once on real images; `compare` places samples in them."""

    def __init__(self, centroids: np.ndarray, real_counts: np.ndarray, max_side: int):
        self.centroids, self.real_counts, self.max_side = centroids, real_counts, max_side

    @property
    def k(self) -> int:
        return len(self.centroids)

    @classmethod
    def fit(cls, reals: np.ndarray, k: int, seed: int = 0, max_side: int = MAX_SIDE,
            iters: int = KMEANS_ITERS) -> "Bins":
        x = flat_pixels(reals, max_side)
        c = kmeans(x, k, seed, iters)
        return cls(c, np.bincount(nearest(x, c)[0], minlength=k), max_side)

    def counts(self, images: np.ndarray) -> np.ndarray:
        """How many of `images` fall into each bin."""
        labels = nearest(flat_pixels(images, self.max_side), self.centroids)[0]
        return np.bincount(labels, minlength=self.k)

    def compare(self, samples: np.ndarray, alpha: float = ALPHA) -> dict[str, Any]:
        """NDB and friends of `samples` against the reals the bins were fitted on."""
        s = self.counts(samples)
        diff = different_bins(self.real_counts, s, alpha)
        return {"bins": self.k, "different": int(diff.sum()), "ndb_k": float(diff.mean()),
                "js": js_divergence(self.real_counts, s),
                "covered": int(covered_bins(self.real_counts, s).sum()),
                "reals": int(self.real_counts.sum()), "samples": int(s.sum()), "alpha": alpha,
                "cover_ratio": COVER_RATIO, "max_side": self.max_side}


def ndb(reals: np.ndarray, samples: np.ndarray, k: int = 50, seed: int = 0,
        alpha: float = ALPHA) -> dict[str, Any]:
    """Bins fitted on `reals` (k at most their number), then `samples` compared with them."""
    return Bins.fit(reals, min(k, len(reals)), seed).compare(samples, alpha)
