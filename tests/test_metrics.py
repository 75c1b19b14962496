"""The quality figures of began.train.metrics on features whose answers are known:
hand computations, scipy's matrix square root, constructed clusters."""

import numpy as np
import pytest

from began.train import metrics



def _scipy_linalg():
    return pytest.importorskip("scipy.linalg")  # in the test extra; only these checks need it


def _cov_pair(d: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    y = rng.normal(size=(n, d)) * rng.uniform(0.2, 3, d) + rng.normal(size=d)
    return x, y


def _fid_scipy(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula with scipy's general sqrtm (what the TF FID code does)."""
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = _scipy_linalg().sqrtm(s1 @ s2)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root.real))


@pytest.mark.parametrize("d,n", [(8, 50), (24, 200)])
def test_trace_sqrtm_matches_scipy(d, n):
    x, y = _cov_pair(d, n, seed=d)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ours = metrics.trace_sqrtm_product(s1, s2)
    ref = np.trace(_scipy_linalg().sqrtm(s1 @ s2)).real
    assert ours == pytest.approx(ref, rel=1e-9)
    r = metrics.sqrtm_psd(s1)
    np.testing.assert_allclose(r @ r, s1, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("d,n", [(8, 50), (24, 200), (32, 12)])
def test_fid_matches_scipy_formula(d, n):
    # (32, 12): fewer samples than dimensions, the low-rank path
    x, y = _cov_pair(d, n, seed=n)
    ours = metrics.fid(x, y)
    assert ours == pytest.approx(_fid_scipy(x, y), rel=1e-6, abs=1e-6)
    via_stats = metrics.frechet_distance(metrics.feature_stats(x), metrics.feature_stats(y))
    assert ours == pytest.approx(via_stats, rel=1e-8, abs=1e-8)


def test_fid_one_dimension_by_hand():
    # 1-d Gaussians: FID = (m1 - m2)^2 + (s1 - s2)^2
    x = np.array([[0.0], [1.0], [2.0], [5.0]])
    y = np.array([[3.0], [3.5], [7.0]])
    m1, m2 = 2.0, 13.5 / 3
    s1 = np.sqrt(((x - m1) ** 2).sum() / 3)
    s2 = np.sqrt(((y - m2) ** 2).sum() / 2)
    assert metrics.fid(x, y) == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12)


@pytest.mark.parametrize("n", [10, 300])
def test_fid_of_a_set_against_itself_is_zero(n):
    x, _ = _cov_pair(16, n, seed=3)
    assert abs(metrics.fid(x, x)) < 1e-8 * np.trace(np.cov(x, rowvar=False))


@pytest.mark.parametrize("n", [10, 300])
def test_fid_of_a_mean_shift_is_its_squared_length(n):
    x, _ = _cov_pair(16, n, seed=4)
    shift = np.random.default_rng(5).normal(size=16)
    assert metrics.fid(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_mmd2_unbiased_by_hand():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(5, 3)) + 0.5

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(4) for j in range(5)) / 20
    # float32 products inside (as on real features): 1e-5 relative
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-5)


def test_kid_subsets():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(40, 8)) + 1.0
    # subsets as large as the smaller set: every subset of x is all of x
    mean, std = metrics.kid(x, y[:30], subsets=5, subset_size=100)
    assert std == pytest.approx(0.0, abs=1e-12)
    assert mean == pytest.approx(metrics.mmd2_unbiased(x, y[:30]), rel=1e-12)
    shifted, _ = metrics.kid(x, y, subsets=20, subset_size=20)
    same, same_std = metrics.kid(x, rng.normal(size=(40, 8)), subsets=20, subset_size=20)
    assert shifted > 0.5 and abs(same) < 0.2 < shifted and same_std > 0
    # kernels of the whole sets sliced per subset == kernels computed per subset
    sliced = metrics.kid(x, y, subsets=7, subset_size=15, seed=3)
    per_subset = metrics.kid(x, y, subsets=7, subset_size=15, seed=3, full_kernel_max=0)
    assert sliced == pytest.approx(per_subset, rel=1e-6)


def test_precision_recall_by_hand():
    # 1-d, k = 1. Real radii: 1, 1, 1, 1 and 17 (the outlier at 20). Fakes 0.5, 5, 2.9 all lie
    # in a real ball (5 in the outlier's), so precision 1. Fake radii: 2.4, 2.1, 2.1; real
    # 0, 1, 2, 3 are covered, 20 is not: recall 4/5.
    real = np.array([[0.0], [1.0], [2.0], [3.0], [20.0]])
    fake = np.array([[0.5], [5.0], [2.9]])
    assert metrics.precision_recall(real, fake, k=1) == pytest.approx((1.0, 0.8))
    # the outlier gone, 5 is 2 from 3 and outside every radius-1 ball: precision 2/3
    p, r = metrics.precision_recall(real[:4], fake, k=1)
    assert p == pytest.approx(2 / 3) and r == 1.0


@pytest.mark.parametrize("clusters", [2, 4, 8])
def test_recall_of_a_collapsed_generator_is_one_over_k(clusters):
    rng = np.random.default_rng(clusters)
    # few dimensions: k-NN balls estimate a manifold well only with many points per dimension
    d, per = 2, 100
    centres = rng.normal(size=(clusters, d)) * 50  # far apart compared with their spread
    real = np.concatenate([c + rng.normal(size=(per, d)) for c in centres])
    fake = centres[0] + rng.normal(size=(per, d))  # one mode only
    p, r = metrics.precision_recall(real, fake, k=3, chunk=37)  # chunking must not matter
    assert p >= 0.9
    assert r == pytest.approx(1 / clusters, abs=0.05) and r <= 1 / clusters
    # a generator covering every mode recalls nearly everything
    full = np.concatenate([c + rng.normal(size=(per, d)) for c in centres])
    p, r = metrics.precision_recall(real, full, k=3)
    assert p >= 0.9 and r >= 0.9


def test_precision_recall_refuses_a_bad_k():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="k must be"):
        metrics.precision_recall(x, x, k=3)


def test_random_pairs_never_pair_an_image_with_itself():
    p = metrics.random_pairs(5, 2000, seed=0)
    assert (p[:, 0] != p[:, 1]).all() and p.min() == 0 and p.max() == 4
    assert len({tuple(r) for r in p}) == 20  # every ordered pair of 5 is drawn


def test_msssim_of_identical_images_is_one_and_of_noise_is_low():
    pytest.importorskip("pytorch_msssim")
    rng = np.random.default_rng(0)
    same = np.repeat(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 6, axis=0)
    assert metrics.mean_pairwise_msssim(same, pairs=10) == pytest.approx(1.0, abs=1e-5)
    noise = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    low = metrics.mean_pairwise_msssim(noise, pairs=10)
    # smooth shapes that differ only slightly sit in between
    y, x = np.mgrid[0:32, 0:32]
    shapes = np.stack([np.stack([(x + s) * 6, y * 6, 0 * x + 100], -1) for s in range(6)])
    mid = metrics.mean_pairwise_msssim(shapes.clip(0, 255).astype(np.uint8), pairs=10)
    assert low < 0.3 < mid < 1.0
    # 176 px and up is used as it is: a larger image is not resized
    big = np.repeat(np.repeat(noise, 6, axis=1), 6, axis=2)  # 192 px
    assert 0 < metrics.mean_pairwise_msssim(big, pairs=4) < 1
