"""PPO clipped surrogate with decoupled bounds, loss aggregation and truncated IS weights.

Shapes: ``B`` responses, ``L`` response positions. ``mask`` is a binary ``[B, L]`` (bool, int or
float 0/1) marking real response tokens. Values under ``mask == 0`` never reach the loss, its
gradient or the stats, even when they are ``inf`` or ``NaN`` (padding often holds garbage).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Agg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")

# exp() of a log ratio beyond this is clamped: the token is clipped (or its weight ~0) anyway,
# and it keeps exp() finite in fp32/bf16. veRL uses the same bound.
_LOG_RATIO_CLAMP = 20.0


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is set; 0 where nothing is set (no NaN)."""
    keep = mask.bool()  # same shape as x
    total = torch.where(keep, x, torch.zeros_like(x))  # masked-out inf/NaN become 0
    count = keep.sum() if dim is None else keep.sum(dim=dim)
    summed = total.sum() if dim is None else total.sum(dim=dim)
    return summed / count.clamp(min=1).to(summed.dtype)


def aggregate(
    loss_tokens: Tensor,
    mask: Tensor,
    agg: str = "token-mean",
    max_tokens: int | None = None,
    denom: float | None = None,
) -> Tensor:
    """Reduce per-token losses ``[B, L]`` to a scalar.

    * ``token-mean``: sum over all masked tokens / number of masked tokens (DAPO).
    * ``seq-mean-token-mean``: mean over each sequence's tokens, then mean over sequences.
    * ``seq-mean-token-sum-norm``: each sequence's token sum / ``max_tokens`` (a constant,
      Dr.GRPO), then mean over sequences. ``max_tokens`` is required here.

    "Sequences" are rows with at least one masked token (a fully padded row is not a response).
    ``denom`` replaces the final divisor (token count, or sequence count for the ``seq-`` modes)
    so that micro-batches of one mini-batch can be normalised by the mini-batch's total; an
    empty batch gives 0 with a gradient of 0.
    """
    keep = mask.bool()  # [B, L]
    tokens = torch.where(keep, loss_tokens, torch.zeros_like(loss_tokens))  # [B, L]
    if agg == "token-mean":
        n = keep.sum().clamp(min=1).item() if denom is None else denom
        return tokens.sum() / n
    if agg == "seq-mean-token-mean":
        per_seq = tokens.sum(dim=1) / keep.sum(dim=1).clamp(min=1)  # [B]
    elif agg == "seq-mean-token-sum-norm":
        if max_tokens is None or max_tokens <= 0:
            raise ValueError(
                f"agg='seq-mean-token-sum-norm' needs a positive max_tokens, got {max_tokens}"
            )
        per_seq = tokens.sum(dim=1) / max_tokens  # [B]
    else:
        raise ValueError(f"unknown agg {agg!r}; known: {', '.join(AGG_MODES)}")
    n_seq = keep.any(dim=1).sum().clamp(min=1).item() if denom is None else denom
    return per_seq.sum() / n_seq


def policy_loss(
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
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate with decoupled clip bounds (DAPO "clip-higher").

    Per token: ``rho = exp(logprobs - old_logprobs)`` and
    ``loss = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)``, times ``is_weights``
    (detached) when given, then reduced by :func:`aggregate` (``agg``, ``max_tokens``, ``denom``).

    Stats (python floats, over masked tokens; 0 for an empty batch):
    ``clipfrac`` share of tokens where the min strictly chose the clipped term (gradient 0);
    ``clipfrac_high`` the A > 0, rho > 1 + eps_high part; ``clipfrac_low`` the A < 0,
    rho < 1 - eps_low part; ``ratio_mean``, ``ratio_max``; ``approx_kl`` = mean of
    ``rho - 1 - log rho`` (k3: non-negative, unbiased estimate of KL(pi_old || pi_theta) from
    samples of pi_old); ``pg_loss`` the returned loss; ``tokens`` the masked token count.
    """
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and "
            f"mask {tuple(mask.shape)} must have the same [B, L] shape"
        )
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"advantages must be [B]={tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}"
        )
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    keep = mask.bool()  # [B, L]
    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), 0.0)  # [B, L]; pad -> rho 1
    log_ratio = log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)  # [B, L]
    ratio = torch.exp(log_ratio)  # [B, L]
    adv = advantages.detach().to(ratio.dtype).unsqueeze(1)  # [B, 1]
    unclipped = ratio * adv  # [B, L]
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv  # [B, L]
    loss_tokens = -torch.minimum(unclipped, clipped)  # [B, L]
    if is_weights is not None:
        loss_tokens = loss_tokens * is_weights.detach().to(loss_tokens.dtype)  # [B, L]
    loss = aggregate(loss_tokens, mask, agg, max_tokens, denom)  # []

    with torch.no_grad():
        took_clip = keep & (clipped < unclipped)  # [B, L]
        high = took_clip & (adv > 0)  # [B, L]  rho > 1 + eps_high
        low = took_clip & (adv < 0)  # [B, L]  rho < 1 - eps_low
        n = keep.sum()
        stats = {
            "pg_loss": float(loss.detach().item()),
            "clipfrac": float(masked_mean(took_clip.float(), keep).item()),
            "clipfrac_high": float(masked_mean(high.float(), keep).item()),
            "clipfrac_low": float(masked_mean(low.float(), keep).item()),
            "ratio_mean": float(masked_mean(ratio, keep).item()),
            "ratio_max": float(torch.where(keep, ratio, 0.0).max().item()) if n > 0 else 0.0,
            "approx_kl": float(masked_mean(ratio - 1.0 - log_ratio, keep).item()),
            "tokens": float(n.item()),
        }
    return loss, stats


def truncated_is_weights(
    trainer_old_logprobs: Tensor,
    sampler_logprobs: Tensor,
    mask: Tensor,
    low: float = 0.5,
    high: float = 5.0,
) -> tuple[Tensor, dict[str, float]]:
    """Truncated importance weights between the trainer's and the rollout engine's log-probs.

    ``w = clamp(exp(trainer_old_logprobs - sampler_logprobs), low, high)`` per token (ProRL v2
    uses [0.5, 5]; ``low=0`` gives the one-sided ``min(ratio, high)``): the rollout engine (vLLM, other kernels/precision) samples from a slightly
    different distribution than the trainer scores, and ``w`` re-weights the loss toward the
    trainer's ``pi_old``. Weights are detached; masked-out positions get weight 1.

    Stats over masked tokens: ``mismatch_abs_mean`` / ``mismatch_abs_max`` (|log ratio|),
    ``is_weight_mean``, ``is_clamped_frac`` (clamped either side), ``is_clamped_low_frac``,
    ``is_clamped_high_frac``.
    """
    if not 0 <= low <= 1 <= high:
        raise ValueError(f"need 0 <= low <= 1 <= high, got low={low}, high={high}")
    keep = mask.bool()  # [B, L]
    with torch.no_grad():
        log_ratio = torch.where(keep, trainer_old_logprobs - sampler_logprobs, 0.0)  # [B, L]
        raw = torch.exp(log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))  # [B, L]
        weights = raw.clamp(low, high)  # [B, L]
        clamped_low = keep & (raw < low)  # [B, L]
        clamped_high = keep & (raw > high)  # [B, L]
        abs_lr = log_ratio.abs()  # [B, L]; 0 under the mask
        stats = {
            "mismatch_abs_mean": float(masked_mean(abs_lr, keep).item()),
            "mismatch_abs_max": float(abs_lr.max().item()) if abs_lr.numel() else 0.0,
            "is_weight_mean": float(masked_mean(weights, keep).item()),
            "is_clamped_frac": float(masked_mean((clamped_low | clamped_high).float(), keep)),
            "is_clamped_low_frac": float(masked_mean(clamped_low.float(), keep).item()),
            "is_clamped_high_frac": float(masked_mean(clamped_high.float(), keep).item()),
        }
    return weights.detach(), stats
