"""Per-token KL estimators between the policy and the reference policy.

With ``x = logprobs - ref_logprobs`` (tokens sampled from the policy pi):

* ``k1 = x``: unbiased for KL(pi || ref) but high variance and can be negative.
* ``k2 = 0.5 * x**2``: biased but low variance; as a *loss* its gradient is, in expectation
  on-policy, exactly the gradient of KL(pi || ref) (ProRL v2 uses it).
* ``k3 = exp(-x) - 1 + x`` = ``ref/pi - log(ref/pi) - 1``: unbiased, non-negative, low
  variance estimate of KL(pi || ref) (Schulman's "k3"); note its gradient as a loss follows
  KL(ref || pi) in expectation, which is what GRPO implementations do in practice.

``x`` is clamped to [-10, 10] before *every* estimator (k1 included, for one rule), the clamp
ProRL v2 uses: it bounds ``exp(-x)`` and stops one wildly off token from dominating the
penalty. Beyond the clamp the gradient is 0. The caller masks and aggregates the ``[B, L]``
result (e.g. with :func:`prorl.rl.aggregate`) and multiplies by the KL coefficient beta.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

KL_CLAMP = 10.0


def _k1(x: Tensor) -> Tensor:
    return x  # [B, L]


def _k2(x: Tensor) -> Tensor:
    return 0.5 * x.square()  # [B, L]


def _k3(x: Tensor) -> Tensor:
    return torch.expm1(-x) + x  # [B, L]; expm1 keeps precision for small |x|


KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3") -> Tensor:
    """Per-token KL estimate ``[B, L]`` of kind ``k1``, ``k2`` or ``k3`` (see module doc).

    ``ref_logprobs`` is treated as data (detached); the gradient flows through ``logprobs``.
    """
    try:
        fn = KL_ESTIMATORS[kind]
    except KeyError:
        known = ", ".join(sorted(KL_ESTIMATORS))
        raise ValueError(f"unknown KL estimator {kind!r}; known: {known}") from None
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ"
        )
    x = logprobs - ref_logprobs.detach()  # [B, L]
    # NaN (garbage under a padding mask) -> 0 so that masking it later also keeps its
    # gradient finite; +-inf falls to the clamp like any large value.
    x = torch.nan_to_num(x, nan=0.0).clamp(-KL_CLAMP, KL_CLAMP)  # [B, L]
    return fn(x)  # [B, L]
