"""NDB and bin coverage (train/coverage.py) on synthetic clusters whose answer is known:
K well-separated clusters of images, the bins fitted on one sample of them."""

import numpy as np
import pytest

from began.train import coverage as cv

K = 20


def centres(k=K, side=16, seed=99):
    """k random uint8 images: far apart in pixels (mean squared gap ~ 2 x 5,400 a pixel)."""
    return np.random.default_rng(seed).integers(0, 256, (k, side, side, 3))


def draw(n, seed, which=None, noise=8.0, k=K):
    """n images, each one of the `which` cluster centres (all by default) plus noise."""
    rng = np.random.default_rng(seed)
    which = np.arange(k) if which is None else np.asarray(which)
    pick = rng.choice(which, n)
    x = centres(k)[pick] + rng.normal(0, noise, (n, 16, 16, 3))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def bins():
    return cv.Bins.fit(draw(1000, seed=1), K, seed=0)


def test_bins_find_the_clusters(bins):
    # k-means++ (greedy) puts one centroid on each cluster: every bin holds one cluster
    assert bins.k == K and sorted(bins.real_counts) == sorted(
        np.bincount(np.random.default_rng(1).choice(K, 1000), minlength=K))
    assert bins.real_counts.sum() == 1000 and (bins.real_counts > 0).all()


def test_same_distribution_reads_no_difference(bins):
    r = bins.compare(draw(1000, seed=2))  # disjoint from the fit set
    assert r["different"] <= 0.1 * K and r["ndb_k"] == r["different"] / K
    assert r["covered"] == K
    assert r["js"] < 0.01
    assert (r["bins"], r["reals"], r["samples"]) == (K, 1000, 1000)


def test_three_clusters_cover_three_bins_and_differ_in_the_rest(bins):
    r = bins.compare(draw(1000, seed=3, which=[2, 7, 11]))
    assert r["covered"] == 3
    # the 17 emptied bins all differ; the 3 overfilled ones (1/3 against 1/20) too
    assert K - 3 <= r["different"] <= K


def test_one_cluster_differs_almost_everywhere(bins):
    r = bins.compare(draw(1000, seed=4, which=[5]))
    assert r["covered"] == 1 and r["different"] >= K - 1


def test_js_orders_the_cases(bins):
    js = [bins.compare(draw(1000, seed=5, which=w))["js"]
          for w in (None, range(10), [2, 7, 11], [5])]
    assert js == sorted(js) and js[0] < 0.01 and 0.75 < js[-1] <= 1.0  # 0.86 for equal bins
    # by hand: one of K equal bins against all of them
    p = np.full(K, 1.0 / K)
    q = np.eye(K)[0]
    m = (p + q) / 2
    want = 0.5 * (p * np.log2(p / m)).sum() + 0.5 * np.log2(1 / m[0])
    assert cv.js_divergence(p * 50, q * 7) == pytest.approx(want)
    assert cv.js_divergence(p, p) == 0.0


def test_z_test_by_hand():
    # 30/100 against 50/100: pooled 0.4, se = sqrt(0.4 * 0.6 * 0.02) = 0.0693, z = 2.89
    assert cv.different_bins([30, 70], [50, 50]).tolist() == [True, True]
    # 30/100 against 40/100: z = 1.46, p = 0.14
    assert cv.different_bins([30, 70], [40, 60]).tolist() == [False, False]
    # a bin no one is in is never different
    assert cv.different_bins([0, 10], [0, 10]).tolist() == [False, False]


def test_covered_is_half_the_real_share():
    real = np.array([10, 10, 80])
    assert cv.covered_bins(real, np.array([5, 4, 91])).tolist() == [True, False, True]
    assert cv.covered_bins(real, np.array([0, 0, 100])).tolist() == [False, False, True]


def test_deterministic_for_a_seed_and_seed_dependent():
    reals, samples = draw(400, seed=6, noise=60), draw(400, seed=7, noise=60)
    a = cv.ndb(reals, samples, k=K, seed=3)
    assert a == cv.ndb(reals, samples, k=K, seed=3)
    c1 = cv.kmeans(cv.flat_pixels(reals), K, seed=3)
    assert np.array_equal(c1, cv.kmeans(cv.flat_pixels(reals), K, seed=3))
    assert not np.array_equal(c1, cv.kmeans(cv.flat_pixels(reals), K, seed=4))


def test_pixels_uint8_and_float_agree_and_are_box_averaged():
    u8 = draw(4, seed=8)
    f = u8.astype(np.float32) / 127.5 - 1.0  # G's range
    np.testing.assert_allclose(cv.flat_pixels(u8), cv.flat_pixels(f), atol=1e-6)
    big = np.repeat(np.repeat(u8, 4, axis=1), 4, axis=2)  # 64x64: averaged back to 32x32
    small = cv.flat_pixels(big)
    assert small.shape == (4, 32 * 32 * 3)
    np.testing.assert_allclose(small, cv.flat_pixels(np.repeat(np.repeat(u8, 2, 1), 2, 2)),
                               atol=1e-6)
    assert cv.flat_pixels(draw(2, seed=9)[:, :15, :15]).shape == (2, 15 * 15 * 3)


def test_k_is_capped_by_the_reals_and_checked():
    r = cv.ndb(draw(8, seed=10), draw(20, seed=11), k=50)
    assert r["bins"] == 8 and r["reals"] == 8 and r["samples"] == 20
    with pytest.raises(ValueError, match="k must be"):
        cv.kmeans(cv.flat_pixels(draw(3, seed=12)), 4)


def test_duplicate_reals_still_give_k_centroids():
    same = np.repeat(draw(2, seed=13), 10, axis=0)  # two distinct images, 20 rows
    b = cv.Bins.fit(same, 5, seed=0)
    assert b.k == 5 and b.real_counts.sum() == 20


def test_two_thousand_images_take_seconds():
    import time

    rng = np.random.default_rng(0)
    c = rng.integers(0, 256, (50, 32, 32, 3))
    reals = np.clip(c[rng.choice(50, 2000)] + rng.normal(0, 20, (2000, 32, 32, 3)), 0, 255)
    samples = np.clip(c[rng.choice(50, 2000)] + rng.normal(0, 20, (2000, 32, 32, 3)), 0, 255)
    t = time.perf_counter()
    r = cv.ndb(reals.astype(np.uint8), samples.astype(np.uint8), k=50)
    took = time.perf_counter() - t
    assert r["bins"] == 50 and r["different"] <= 5
    assert took < 20, took  # about 0.5 s on one core of the shared 2-core CPU
