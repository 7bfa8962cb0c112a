"""The unbiased pass@k estimator (numpy only, no torch).

From n samples of a problem of which c succeed, the probability that at least one of k
samples drawn without replacement succeeds is

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)

The product form never forms a binomial coefficient, so it neither overflows (C(1024, 512)
has 307 digits) nor loses precision the way differences of log-gammas do: each factor lies in
(0, 1], the logs are summed with ``log1p`` and the complement is taken with ``expm1``.

Continuous rewards (reasoning-gym partial credit, instruction following) are turned into
successes by a threshold: a sample succeeds when ``reward >= threshold`` (default 1.0, i.e. full
credit; see ``successes``). Mean reward is reported separately as pass@1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# A sample counts as a success when its reward reaches this (full credit by default).
DEFAULT_THRESHOLD = 1.0
# Rewards are floats: 0.9999999999 from an averaging verifier still means full credit.
_EPS = 1e-9


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def pass_at_k(
    n: int | npt.ArrayLike, c: int | npt.ArrayLike, k: int
) -> float | npt.NDArray[np.float64]:
    """Unbiased pass@k for each problem; ``n`` and ``c`` broadcast against each other.

    Returns a float when both ``n`` and ``c`` are scalars, else an array of the broadcast
    shape. Raises ValueError when k < 1, k > n, c < 0 or c > n (pass@k is undefined when
    fewer than k samples were drawn).
    """
    k = _check_k(k)
    n_arr, c_arr = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    if n_arr.size and not (
        np.all(np.equal(np.mod(n_arr, 1), 0)) and np.all(np.equal(np.mod(c_arr, 1), 0))
    ):
        raise ValueError("n and c must be integers")
    n_arr = n_arr.astype(np.int64)
    c_arr = c_arr.astype(np.int64)
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("need 0 <= c <= n for every problem")
    if np.any(n_arr < k):
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n_arr.min()}")
    # Few distinct (n, c) pairs exist (at most n+1 per n): compute each product once.
    pairs, inverse = np.unique(
        np.stack([n_arr.ravel(), c_arr.ravel()], axis=1), axis=0, return_inverse=True
    )
    values = np.array([_one(int(nn), int(cc), k) for nn, cc in pairs], dtype=np.float64)
    out = values[np.asarray(inverse).ravel()].reshape(n_arr.shape)
    if np.ndim(n) == 0 and np.ndim(c) == 0:
        return float(out)
    return out


def _one(n: int, c: int, k: int) -> float:
    if n - c < k:
        # Every draw of k samples contains a success (the product has a factor 1 - k/k = 0).
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(0.0 - np.expm1(np.sum(np.log1p(-k / i))))  # 0.0 - avoids -0.0


def pass_at_k_matrix(
    n: npt.ArrayLike, c: npt.ArrayLike, ks: Sequence[int]
) -> npt.NDArray[np.float64]:
    """pass@k per problem for every k: shape [problems, len(ks)]."""
    n_arr = np.atleast_1d(np.asarray(n))
    c_arr = np.atleast_1d(np.asarray(c))
    if not ks:
        raise ValueError("need at least one k")
    cols = [np.atleast_1d(np.asarray(pass_at_k(n_arr, c_arr, k))) for k in ks]
    return np.stack(cols, axis=1)


def successes(
    rewards: npt.ArrayLike, threshold: float = DEFAULT_THRESHOLD
) -> npt.NDArray[np.int64]:
    """Number of successful samples per problem: rewards of shape [problems, n] -> [problems].

    A sample succeeds when ``reward >= threshold`` (minus a float tolerance of 1e-9).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"success threshold must lie in (0, 1], got {threshold}")
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must have shape [problems, n], got {r.shape}")
    return np.sum(r >= threshold - _EPS, axis=1).astype(np.int64)


def default_ks(n: int) -> list[int]:
    """Powers of two up to n, plus n itself: 1, 2, 4, ..., n (the paper's grid)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ks = [1]
    while ks[-1] * 2 <= n:
        ks.append(ks[-1] * 2)
    if ks[-1] != n:
        ks.append(n)
    return ks


def parse_ks(spec: str, n: int) -> list[int]:
    """Parse ``--k 1,2,4,8`` (sorted, deduplicated); every k must satisfy 1 <= k <= n."""
    try:
        ks = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError as e:
        raise ValueError(f"--k must be comma-separated integers, got {spec!r}") from e
    if not ks:
        raise ValueError("--k is empty")
    bad = [k for k in ks if k < 1 or k > n]
    if bad:
        raise ValueError(f"every k must lie in [1, n={n}]; got {bad}")
    return ks
