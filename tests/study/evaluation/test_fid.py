"""Fréchet distance (closed forms, robustness), statistics, and the ADM npz format."""
import numpy as np
import pytest
from scipy import linalg
from scipy.stats import ortho_group

from study.evaluation.fid import (AdmNpzError, FeatureStats, StatisticsMismatchError, StreamingStats,
                                  compute_statistics, fd, frechet_distance, frechet_distance_sqrtm, iter_npz_images,
                                  npz_image_count, read_adm_npz, write_adm_npz)


def _random_cov(d, rng, scale=1.0):
    a = rng.standard_normal((d, 2 * d))
    return scale * a @ a.T / (2 * d)


# ------------------------------------------------------------------ closed forms
def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(64), _random_cov(64, rng)
    assert abs(frechet_distance(mu, s, mu, s)) <= 1e-9 * np.trace(s)


def test_mean_shift_only():
    rng = np.random.default_rng(1)
    s = _random_cov(32, rng)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9, abs=1e-9)


def test_one_dimensional():
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2, abs=1e-12)


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(2)
    d = 48
    q = ortho_group.rvs(d, random_state=3)
    a1, a2 = rng.uniform(0.1, 5, d), rng.uniform(0.1, 5, d)
    s1, s2 = q @ np.diag(a1) @ q.T, q @ np.diag(a2) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a1) - np.sqrt(a2)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_scaled_covariance():
    rng = np.random.default_rng(4)
    s = _random_cov(40, rng)
    mu = np.zeros(40)
    c = 1.7
    assert frechet_distance(mu, s, mu, c * c * s) == pytest.approx((1 - c) ** 2 * np.trace(s), rel=1e-9)


def test_non_commuting_matches_sqrtm_definition():
    s1 = np.array([[2.0, 0.3], [0.3, 0.5]])
    s2 = np.array([[1.0, -0.4], [-0.4, 1.5]])
    assert not np.allclose(s1 @ s2, s2 @ s1)  # the case is really non-commuting
    r = linalg.sqrtm(s1)
    expected = np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(r @ s2 @ r)))
    mu = np.zeros(2)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, abs=1e-13)


def test_rank_deficient_covariance_is_finite_non_negative_and_matches_sqrtm():
    rng = np.random.default_rng(5)
    d, n = 64, 20  # N < d: singular covariances
    x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.3
    a, b = compute_statistics(x), compute_statistics(y)
    assert np.linalg.matrix_rank(a.sigma) < d
    value = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(frechet_distance_sqrtm(a.mu, a.sigma, b.mu, b.sigma), abs=1e-6 * np.trace(a.sigma))
    same = frechet_distance(a.mu, a.sigma, a.mu, a.sigma)
    assert 0.0 <= same <= 1e-6 * np.trace(a.sigma)


def test_symmetry_and_invariance_under_rotation_and_translation():
    rng = np.random.default_rng(6)
    d = 16
    x, y = rng.standard_normal((500, d)), rng.standard_normal((400, d)) * 1.3 + 0.2
    q, t = ortho_group.rvs(d, random_state=7), rng.standard_normal(d)
    a, b = compute_statistics(x), compute_statistics(y)
    ar, br = compute_statistics(x @ q.T + t), compute_statistics(y @ q.T + t)
    base = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert frechet_distance(b.mu, b.sigma, a.mu, a.sigma) == pytest.approx(base, rel=1e-10)
    assert frechet_distance(ar.mu, ar.sigma, br.mu, br.sigma) == pytest.approx(base, rel=1e-9)


def test_matches_sqrtm_route_full_rank():
    rng = np.random.default_rng(8)
    a = compute_statistics(rng.standard_normal((2000, 32)))
    b = compute_statistics(rng.standard_normal((2000, 32)) @ rng.standard_normal((32, 32)) * 0.3 + 1)
    ours = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert ours == pytest.approx(frechet_distance_sqrtm(a.mu, a.sigma, b.mu, b.sigma), rel=1e-8)


def test_gaussian_samples_match_population_value():
    rng = np.random.default_rng(9)
    d, n = 8, 20000
    s2 = np.diag(np.linspace(0.5, 2.0, d))
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d)) @ np.sqrt(s2) + 0.5
    a, b = compute_statistics(x), compute_statistics(y)
    expected = d * 0.25 + np.sum((1 - np.sqrt(np.diag(s2))) ** 2)
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(expected, abs=0.05)


# ------------------------------------------------------------------ errors
def test_dimension_mismatch_is_a_clear_error():
    with pytest.raises(StatisticsMismatchError, match="dimension 4 with dimension 3"):
        frechet_distance(np.zeros(4), np.eye(4), np.zeros(3), np.eye(3))
    with pytest.raises(StatisticsMismatchError, match="sigma1 has shape"):
        frechet_distance(np.zeros(4), np.eye(3), np.zeros(4), np.eye(4))


def test_extractor_mismatch_is_a_clear_error():
    a = FeatureStats(np.zeros(3), np.eye(3), 10, "inception-v3-compat/pool")
    b = FeatureStats(np.zeros(3), np.eye(3), 10, "synthetic-abc/pool")
    with pytest.raises(StatisticsMismatchError, match="different feature extractors"):
        fd(a, b)
    assert fd(a, FeatureStats(np.ones(3), np.eye(3), 10, "inception-v3-compat/pool")) == pytest.approx(3.0)


def test_non_finite_statistics_rejected():
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance([np.nan], [[1.0]], [0.0], [[1.0]])


# ------------------------------------------------------------------ statistics
def test_statistics_are_float64_ddof1_like_np_cov():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((300, 12)).astype(np.float32) * 3 + 100
    s = compute_statistics(x, "toy/pool")
    assert s.mu.dtype == np.float64 and s.sigma.dtype == np.float64
    np.testing.assert_allclose(s.sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.sigma, np.cov(x, rowvar=False, ddof=1), rtol=1e-12)
    assert s.n == 300 and s.extractor == "toy/pool" and s.dim == 12


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1003, 20)) * 5 + 1000  # large offset: a naive one-pass formula loses digits
    acc = StreamingStats("toy")
    for i in range(0, len(x), 97):
        acc.update(x[i:i + 97])
    s, ref = acc.result(), compute_statistics(x)
    np.testing.assert_allclose(s.mu, ref.mu, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s.sigma, ref.sigma, rtol=0, atol=1e-10)
    assert s.n == 1003
    with pytest.raises(StatisticsMismatchError):
        acc.update(np.zeros((2, 3)))


def test_feature_stats_save_load(tmp_path):
    rng = np.random.default_rng(12)
    s = compute_statistics(rng.standard_normal((50, 5)), "synthetic-x/pool")
    back = FeatureStats.load(s.save(tmp_path / "s.npz", reference="toy"))
    np.testing.assert_array_equal(back.mu, s.mu)
    np.testing.assert_array_equal(back.sigma, s.sigma)
    assert (back.n, back.extractor) == (50, "synthetic-x/pool")


# ------------------------------------------------------------------ ADM npz
def test_adm_npz_round_trip(tmp_path):
    rng = np.random.default_rng(13)
    images = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    mu, sigma = rng.standard_normal(6), _random_cov(6, rng)
    path = write_adm_npz(tmp_path / "ref.npz", images=images, labels=np.arange(10), mu=mu, sigma=sigma,
                         mu_s=mu[:4].astype(np.float32), sigma_s=sigma[:4, :4].astype(np.float32))
    with np.load(path) as z:  # the keys ADM's evaluator reads, float64 statistics
        assert {"arr_0", "mu", "sigma", "mu_s", "sigma_s"} <= set(z.files)
        assert z["mu_s"].dtype == np.float64
    batch = read_adm_npz(path)
    np.testing.assert_array_equal(batch.images, images)
    np.testing.assert_array_equal(batch.labels, np.arange(10))
    np.testing.assert_array_equal(batch.mu, mu)
    assert batch.pool_stats.extractor == "inception-v3-compat/pool"
    assert batch.spatial_stats.dim == 4
    assert npz_image_count(path) == 10
    chunks = list(iter_npz_images(path, batch_size=4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), images)


def test_adm_npz_sample_batch_without_stats_and_extra_keys(tmp_path):
    images = np.zeros((3, 4, 4, 3), np.uint8)
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=images, other=np.arange(3))
    batch = read_adm_npz(path)
    assert batch.mu is None and batch.pool_stats is None
    assert set(batch.extra) == {"other"}


@pytest.mark.parametrize("arrays, message", [
    ({"arr_0": np.zeros((2, 4, 4, 3), np.float32)}, "uint8"),
    ({"arr_0": np.zeros((2, 3, 4, 4), np.uint8)}, r"\[N, H, W, 3\]"),
    ({"mu": np.zeros(3, np.int64), "sigma": np.eye(3, dtype=np.int64)}, "floating point"),
    ({"mu": np.zeros(3), "sigma": np.eye(4)}, "shapes"),
    ({"mu": np.zeros(3)}, "without sigma"),
    ({"something": np.zeros(3)}, "neither images"),
])
def test_adm_npz_rejects_bad_layout(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(AdmNpzError, match=message):
        read_adm_npz(path)


def test_write_adm_npz_refuses_bad_input_and_leaves_no_file(tmp_path):
    with pytest.raises(AdmNpzError):
        write_adm_npz(tmp_path / "x.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(AdmNpzError):
        write_adm_npz(tmp_path / "x.npz", mu=np.zeros(2))
    assert list(tmp_path.iterdir()) == []
