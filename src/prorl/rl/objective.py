"""The loss one micro-batch backpropagates: the policy-gradient loss plus the KL penalty."""

from __future__ import annotations

from torch import Tensor

from prorl.rl.kl import kl_penalty
from prorl.rl.losses import POLICY_LOSSES, aggregate, masked_mean


def rl_objective(
    loss: str,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float,
    eps_high: float,
    agg: str = "token-mean",
    max_tokens: int | None = None,
    is_weights: Tensor | None = None,
    denom: float | None = None,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_kind: str = "k3",
) -> tuple[Tensor, dict[str, float]]:
    """``pg + kl_coef * kl`` and its statistics.

    ``loss`` names the policy loss (``algo.policy_loss``: ppo, gspo or cispo); its stats
    (``pg_loss``, ``clipfrac``, ...) come back as they are. With ``ref_logprobs`` (the frozen
    reference's, ``[B, L]``) the per-token KL estimate ``kl_kind`` is aggregated like the
    policy loss (same ``agg`` and ``denom``) and added with weight ``kl_coef``; ``stats["kl"]``
    is its plain mean over the masked tokens. Without it, or with ``kl_coef`` 0 (the KL
    only measured), the loss is the policy loss alone.
    """
    policy_loss = POLICY_LOSSES[loss]
    pg, stats = policy_loss(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        eps_low,
        eps_high,
        agg,
        max_tokens,
        is_weights=is_weights,
        denom=denom,
    )
    if ref_logprobs is None:
        return pg, stats
    kl_tokens = kl_penalty(logprobs, ref_logprobs, kl_kind)  # [B, L]
    stats["kl"] = float(masked_mean(kl_tokens.detach(), mask))
    if not kl_coef:  # measured only (algo.track_kl): the loss is the policy loss's
        return pg, stats
    return pg + kl_coef * aggregate(kl_tokens, mask, agg, max_tokens, denom), stats
