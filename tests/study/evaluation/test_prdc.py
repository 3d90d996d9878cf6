"""Precision/recall (ADM's k-NN manifolds) and the Inception Score, with parity against torch-fidelity."""
import numpy as np
import pytest
import torch

from study.evaluation.prdc import inception_score, manifold_radii, pairwise_sq_distances, precision_recall


def test_pairwise_sq_distances_match_cdist():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(7, 5, generator=g), torch.randn(4, 5, generator=g)
    torch.testing.assert_close(pairwise_sq_distances(u, v), torch.cdist(u, v) ** 2, rtol=1e-5, atol=1e-5)


def test_radii_count_the_point_itself_as_zeroth_neighbour():
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # e.g. from 3: sorted squared distances 0 (itself), 4, 9, 9, 49 -> k=3 gives 9, k=1 gives 4
    np.testing.assert_allclose(manifold_radii(x, k=3), [36, 25, 9, 25, 81])
    np.testing.assert_allclose(manifold_radii(x, k=1), [1, 1, 4, 9, 16])
    with pytest.raises(ValueError, match="more than k=3"):
        manifold_radii(x[:3], k=3)


def test_hand_computed_two_dimensional_example():
    ref = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)  # radius (k=3): squared diagonal = 2
    samples = np.array([[0.5, 0.5], [2.0, 2.0], [5.0, 5.0], [5.0, 6.0], [6.0, 5.0], [6.0, 6.0]])
    # precision: (0.5,0.5) is within 2 of a corner; (2,2) is at squared distance 2 from (1,1) -> inside (<=);
    # the far square is outside. Recall: (0.5,0.5)'s neighbours are itself, (2,2) at 4.5, (5,5) at 40.5 and
    # (5,6) at 50.5, so its k=3 radius 50.5 covers every reference point.
    p, r = precision_recall(ref, samples, k=3)
    assert p == pytest.approx(2 / 6)
    assert r == pytest.approx(1.0)


def test_identical_sets_and_far_apart_sets():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="8-d but sample features 4-d"):
        precision_recall(x, x[:, :4])


def test_precision_recall_matches_torch_fidelity():
    metric_prc = pytest.importorskip("torch_fidelity.metric_prc")
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((300, 16)).astype(np.float32)
    samples = (rng.standard_normal((250, 16)) * 1.2 + 0.3).astype(np.float32)
    theirs = metric_prc.prc_features_to_metric(torch.from_numpy(samples), torch.from_numpy(ref), prc_neighborhood=3,
                                               prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    p, r = precision_recall(ref, samples, batch_size=64)  # small batches exercise the chunking
    assert 0 < p < 1 and 0 < r < 1
    assert p == pytest.approx(theirs["precision"], abs=1 / 250)
    assert r == pytest.approx(theirs["recall"], abs=1 / 300)


def test_inception_score_closed_forms():
    assert inception_score(np.zeros((10, 7))) == pytest.approx(1.0)
    k = 5
    one_hot = np.full((20, k), -1e4)
    one_hot[np.arange(20), np.arange(20) % k] = 0.0
    assert inception_score(one_hot) == pytest.approx(k, rel=1e-9)
    # splits are consecutive chunks: the first half all class 0, the second half all class 1 -> IS 1 per split
    two = np.full((20, 2), -1e4)
    two[:10, 0] = two[10:, 1] = 0.0
    assert inception_score(two, split_size=20) == pytest.approx(2.0)
    assert inception_score(two, split_size=10) == pytest.approx(1.0)


def test_inception_score_matches_torch_fidelity():
    metric_isc = pytest.importorskip("torch_fidelity.metric_isc")
    logits = torch.from_numpy(np.random.default_rng(2).standard_normal((400, 30)) * 3).float()
    theirs = metric_isc.isc_features_to_metric(logits, splits=1, shuffle=False)
    assert inception_score(logits.numpy()) == pytest.approx(theirs["inception_score_mean"], rel=1e-5)
