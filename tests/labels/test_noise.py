import numpy as np
import pytest

from dlrig.errors import UserError
from dlrig.labels.noise import check_labels, inject_noise, noise_summary, noise_transition_matrix

K = 5


def labels(n_per_class=2000, k=K):
    return np.repeat(np.arange(k), n_per_class)


def test_symmetric_flips_about_rate_to_other_classes_uniformly():
    y = labels()
    y_noisy, flipped = inject_noise(y, K, "symmetric", 0.2, seed=0)
    assert y_noisy.dtype == np.int64 and flipped.dtype == bool
    assert np.array_equal(flipped, y_noisy != y)
    assert abs(flipped.mean() - 0.2) < 0.01  # n = 10000: sd of the realised rate is 0.004
    T = noise_transition_matrix(y, y_noisy, K)
    assert np.allclose(np.diag(T), 0.8, atol=0.025)
    off = T[~np.eye(K, dtype=bool)]
    assert np.allclose(off, 0.2 / (K - 1), atol=0.015)  # uniform over the K-1 other classes


def test_pairflip_moves_each_class_to_the_next():
    y = labels()
    y_noisy, flipped = inject_noise(y, K, "pairflip", 0.3, seed=1)
    assert np.array_equal(y_noisy[flipped], (y[flipped] + 1) % K)
    T = noise_transition_matrix(y, y_noisy, K)
    for k in range(K):
        assert abs(T[k, k] - 0.7) < 0.035 and abs(T[k, (k + 1) % K] - 0.3) < 0.035
        assert np.isclose(T[k].sum(), 1.0) and np.isclose(T[k, k] + T[k, (k + 1) % K], 1.0)


def test_asymmetric_touches_only_mapped_classes():
    y = labels(1000, 10)
    mapping = {7: 1, 3: 8}
    y_noisy, flipped = inject_noise(y, 10, "asymmetric", 0.4, seed=2, mapping=mapping)
    assert set(np.unique(y[flipped]).tolist()) == {3, 7}
    assert np.all(y_noisy[flipped & (y == 7)] == 1) and np.all(y_noisy[flipped & (y == 3)] == 8)
    summary = noise_summary(y, y_noisy, 10)
    rates = summary["per_class_rate"]
    assert abs(rates[7] - 0.4) < 0.05 and abs(rates[3] - 0.4) < 0.05
    assert all(rates[k] == 0.0 for k in range(10) if k not in mapping)
    assert abs(summary["rate"] - 0.4 * 2 / 10) < 0.015  # overall rate: only 2 of 10 classes eligible


def test_exactly_reproducible_per_seed_and_nested_in_the_rate():
    y = labels(200)
    a = inject_noise(y, K, "symmetric", 0.25, seed=7)
    b = inject_noise(y, K, "symmetric", 0.25, seed=7)
    c = inject_noise(y, K, "symmetric", 0.25, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # The rows that flip depend on the seed only: a larger rate flips a superset, whatever the kind.
    low = inject_noise(y, K, "symmetric", 0.1, seed=7)[1]
    assert np.all(a[1][low])
    assert np.array_equal(inject_noise(y, K, "pairflip", 0.25, seed=7)[1], a[1])


def test_rate_zero_and_one():
    y = labels(50)
    assert not inject_noise(y, K, "symmetric", 0.0, seed=0)[1].any()
    assert inject_noise(y, K, "symmetric", 1.0, seed=0)[1].all()
    assert np.array_equal(inject_noise(y, K, "pairflip", 1.0, seed=0)[0], (y + 1) % K)


def test_does_not_modify_the_input():
    y = labels(20)
    before = y.copy()
    inject_noise(y, K, "symmetric", 0.5, seed=0)
    assert np.array_equal(y, before)


def test_transition_matrix_and_summary_known_answer():
    y_clean = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_noisy = np.array([0, 0, 1, 2, 1, 0, 2, 2])
    counts = noise_transition_matrix(y_clean, y_noisy, 4, normalize=False)
    assert counts.tolist() == [[2, 1, 1, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    T = noise_transition_matrix(y_clean, y_noisy, 4)
    assert T.tolist() == [[0.5, 0.25, 0.25, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    s = noise_summary(y_clean, y_noisy, 4)
    assert s["n"] == 8 and s["n_flipped"] == 3 and s["rate"] == 0.375
    assert s["per_class_rate"] == [0.5, 0.5, 0.0, None]  # class 3 has no clean sample


def test_bad_arguments_are_refused():
    y = labels(10)
    with pytest.raises(UserError, match="needs labels.noise.mapping"):
        inject_noise(y, K, "asymmetric", 0.2, seed=0)
    with pytest.raises(UserError, match="outside 0..4"):
        inject_noise(y, K, "asymmetric", 0.2, seed=0, mapping={7: 1})
    with pytest.raises(UserError, match="to itself"):
        inject_noise(y, K, "asymmetric", 0.2, seed=0, mapping={2: 2})
    with pytest.raises(UserError, match="only used with kind asymmetric"):
        inject_noise(y, K, "symmetric", 0.2, seed=0, mapping={1: 2})
    with pytest.raises(ValueError, match="kind must be one of"):
        inject_noise(y, K, "uniform", 0.2, seed=0)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        inject_noise(y, K, "symmetric", 1.5, seed=0)
    with pytest.raises(ValueError, match="must lie in 0..2"):
        check_labels(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="integer class indices"):
        check_labels(np.array([0.0, 1.0]), 3)
