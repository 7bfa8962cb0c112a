"""pass@k estimator: hand values, brute-force enumeration, large n, vectorisation, bad input."""

from __future__ import annotations

import itertools
import subprocess
import sys
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from prorl.evaluate.passk import default_ks, parse_ks, pass_at_k, pass_at_k_matrix, successes


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 4, 1, 1.0),  # all correct
        (4, 4, 4, 1.0),
        (4, 0, 1, 0.0),  # none correct
        (4, 0, 4, 0.0),
        (4, 3, 1, 0.75),
        (10, 1, 5, 0.5),
        (10, 1, 1, 0.1),
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (6, 1, 6, 1.0),
    ],
)
def test_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_matches_brute_force_enumeration_for_small_n() -> None:
    # Enumerate every k-subset of n samples (the first c correct) and count those with a hit.
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                hits = sum(any(i < c for i in s) for s in subsets)
                assert pass_at_k(n, c, k) == pytest.approx(hits / len(subsets), abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(1024, 1, 1), (1024, 3, 512), (2048, 17, 1000)])
def test_large_n_without_overflow_matches_exact_fractions(n: int, c: int, k: int) -> None:
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))  # C(2048, 1000) has ~600 digits
    got = pass_at_k(n, c, k)
    assert np.isfinite(got)
    assert got == pytest.approx(float(exact), rel=1e-10)


def test_tiny_probabilities_keep_relative_precision() -> None:
    # 1 - (1 - 1/1024) = 1/1024 exactly; a naive 1 - prod would lose digits here.
    assert pass_at_k(1024, 1, 1) == pytest.approx(1 / 1024, rel=1e-13)


def test_vectorised_over_problems_and_scalar_return() -> None:
    n = np.array([10, 10, 10, 4])
    c = np.array([0, 1, 10, 3])
    got = pass_at_k(n, c, 1)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, [0.0, 0.1, 1.0, 0.75])
    assert isinstance(pass_at_k(4, 3, 1), float)
    # n broadcasts against c
    np.testing.assert_allclose(pass_at_k(10, [1, 1], 5), [0.5, 0.5])
    m = pass_at_k_matrix([10, 10], [1, 0], [1, 5, 10])
    np.testing.assert_allclose(m, [[0.1, 0.5, 1.0], [0.0, 0.0, 0.0]])


def test_monotone_in_k_and_c() -> None:
    n = 64
    curve = [pass_at_k(n, 5, k) for k in range(1, n + 1)]
    assert all(b >= a for a, b in itertools.pairwise(curve))
    by_c = [pass_at_k(n, c, 8) for c in range(n + 1)]
    assert all(b >= a for a, b in itertools.pairwise(by_c))


@pytest.mark.parametrize(
    ("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (4.5, 2, 1), (4, 2, 1.5)]
)
def test_bad_input_raises(n: float, c: int, k: float) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)  # type: ignore[arg-type]


def test_successes_threshold_for_continuous_rewards() -> None:
    rewards = np.array([[1.0, 0.5, 0.9999999999, 0.0], [0.2, 0.2, 0.2, 0.2]])
    np.testing.assert_array_equal(successes(rewards), [2, 0])
    np.testing.assert_array_equal(successes(rewards, threshold=0.5), [3, 0])
    with pytest.raises(ValueError):
        successes(rewards, threshold=0.0)
    with pytest.raises(ValueError):
        successes(np.zeros(3))


def test_k_grids() -> None:
    assert default_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert default_ks(20) == [1, 2, 4, 8, 16, 20]
    assert default_ks(1) == [1]
    assert parse_ks("8,1,2,2", 8) == [1, 2, 8]
    with pytest.raises(ValueError, match="n=8"):
        parse_ks("1,16", 8)
    with pytest.raises(ValueError):
        parse_ks("1,x", 8)


def test_evaluate_package_does_not_import_torch() -> None:
    code = (
        "import sys, prorl.evaluate, prorl.evaluate.analysis, prorl.evaluate.report, "
        "prorl.evaluate.cli, prorl.evaluate.runner; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
