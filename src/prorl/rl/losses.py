"""Policy losses (PPO clipped surrogate with decoupled bounds, GSPO, CISPO), loss aggregation
and truncated IS weights.

Shapes: ``B`` responses, ``L`` response positions. ``mask`` is a binary ``[B, L]`` (bool, int or
float 0/1) marking real response tokens. Values under ``mask == 0`` never reach the loss, its
gradient or the stats, even when they are ``inf`` or ``NaN`` (padding often holds garbage).
"""

from __future__ import annotations

from typing import Literal, Protocol

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


def _check_shapes(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor) -> None:
    """The ``[B, L]`` / ``[B]`` contract every policy loss shares."""
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and "
            f"mask {tuple(mask.shape)} must have the same [B, L] shape"
        )
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"advantages must be [B]={tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}"
        )


def _token_stats(
    loss: Tensor,
    keep: Tensor,
    ratio: Tensor,
    log_ratio: Tensor,
    clipped: Tensor,
    high: Tensor,
    low: Tensor,
) -> dict[str, float]:
    """The stats every policy loss reports, over the masked tokens (0 for an empty batch):
    ``clipped``/``high``/``low`` mark the tokens each loss counts as clipped."""
    n = keep.sum()
    return {
        "pg_loss": float(loss.detach().item()),
        "clipfrac": float(masked_mean(clipped.float(), keep).item()),
        "clipfrac_high": float(masked_mean(high.float(), keep).item()),
        "clipfrac_low": float(masked_mean(low.float(), keep).item()),
        "ratio_mean": float(masked_mean(ratio, keep).item()),
        "ratio_max": float(torch.where(keep, ratio, 0.0).max().item()) if n > 0 else 0.0,
        "approx_kl": float(masked_mean(ratio - 1.0 - log_ratio, keep).item()),
        "tokens": float(n.item()),
    }


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
    _check_shapes(logprobs, old_logprobs, advantages, mask)
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
        stats = _token_stats(loss, keep, ratio, log_ratio, took_clip, high, low)
    return loss, stats


def gspo_loss(
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
    """GSPO (Zheng et al. 2025): the clipped surrogate on a length-normalised sequence ratio.

    ``s_i = exp(mean_t(logprobs - old_logprobs))`` over response ``i``'s masked tokens is
    clipped to ``[1 - eps_low, 1 + eps_high]`` once per sequence (the paper uses ~3e-4/4e-4,
    not PPO's 0.2). Written in the paper's GSPO-token form: every token carries
    ``s_i_t = sg[s_i] * pi_theta(y_t) / sg[pi_theta(y_t)]`` (value ``s_i``, gradient
    ``s_i * grad log pi_theta(y_t)``) and ``loss_t = -min(s_i_t * A, clip(s_i_t) * A)``, times
    ``is_weights`` when given, reduced by :func:`aggregate`. With one advantage per response
    and ``agg="seq-mean-token-mean"`` this is GSPO's sequence objective exactly, value and
    gradient; other ``agg`` modes weight the sequences differently (``token-mean``: by length).

    Stats: the common ones of :func:`policy_loss` (``clipfrac*`` = share of *tokens* whose
    sequence was clipped, so whose gradient is 0; ``ratio_*`` and ``approx_kl`` from the token
    ratios) plus ``seq_clipfrac`` / ``seq_clipfrac_high`` / ``seq_clipfrac_low`` (share of
    sequences) and ``seq_ratio_mean`` / ``seq_ratio_max`` (of ``s_i``).
    """
    _check_shapes(logprobs, old_logprobs, advantages, mask)
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    keep = mask.bool()  # [B, L]
    with torch.no_grad():
        log_ratio = torch.where(keep, logprobs - old_logprobs, 0.0)  # [B, L]; pad -> 0
        log_ratio = log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)  # [B, L]
        seq_log_ratio = masked_mean(log_ratio, keep, dim=1)  # [B]; empty row -> 0
    # sg[s_i] * pi / sg[pi] in log space: the value is log s_i, the gradient that of log pi_t
    live = torch.where(keep, logprobs, 0.0)  # [B, L]; inf/NaN padding never enters autograd
    ratio = torch.exp(seq_log_ratio.unsqueeze(1) + (live - live.detach()))  # [B, L]
    adv = advantages.detach().to(ratio.dtype).unsqueeze(1)  # [B, 1]
    unclipped = ratio * adv  # [B, L]
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv  # [B, L]
    loss_tokens = -torch.minimum(unclipped, clipped)  # [B, L]
    if is_weights is not None:
        loss_tokens = loss_tokens * is_weights.detach().to(loss_tokens.dtype)  # [B, L]
    loss = aggregate(loss_tokens, mask, agg, max_tokens, denom)  # []

    with torch.no_grad():
        took_clip = keep & (clipped < unclipped)  # [B, L]; the same on all of a row's tokens
        high = took_clip & (adv > 0)  # [B, L]  s_i > 1 + eps_high
        low = took_clip & (adv < 0)  # [B, L]  s_i < 1 - eps_low
        rows = keep.any(dim=1)  # [B] sequences with a response token
        n_seq = rows.sum()
        seq_ratio = torch.exp(seq_log_ratio)  # [B]
        seq_max = float(torch.where(rows, seq_ratio, 0.0).max().item()) if n_seq > 0 else 0.0
        token_ratio = torch.exp(log_ratio)  # [B, L]
        stats = _token_stats(loss, keep, token_ratio, log_ratio, took_clip, high, low)
        stats |= {
            "seq_clipfrac": float(masked_mean(took_clip.any(dim=1).float(), rows).item()),
            "seq_clipfrac_high": float(masked_mean(high.any(dim=1).float(), rows).item()),
            "seq_clipfrac_low": float(masked_mean(low.any(dim=1).float(), rows).item()),
            "seq_ratio_mean": float(masked_mean(seq_ratio, rows).item()),
            "seq_ratio_max": seq_max,
        }
    return loss, stats


def cispo_loss(
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
    """CISPO (MiniMax-M1, 2025): REINFORCE with a clipped, stop-gradient importance weight.

    Per token: ``r = exp(logprobs - old_logprobs)``, ``w = sg(clip(r, 1 - eps_low,
    1 + eps_high))`` and ``loss_t = -w * A * logprobs``, times ``is_weights`` when given,
    reduced by :func:`aggregate` (the paper: ``token-mean``). Unlike PPO no token loses its
    gradient: clipping bounds the weight, not the update. ``eps_low >= 1`` means no lower bound
    (the paper's setting); ``eps_low`` may exceed 1 here. The loss value is the surrogate
    ``-w * A * log pi`` (its gradient is the policy gradient), not comparable with PPO's.

    Stats: ``clipfrac`` share of tokens whose weight was clipped, whatever the sign of A
    (``clipfrac_high``: r > 1 + eps_high, ``clipfrac_low``: r < 1 - eps_low); ``ratio_mean``,
    ``ratio_max``, ``approx_kl``, ``pg_loss``, ``tokens`` as in :func:`policy_loss`; plus
    ``is_weight_mean`` (mean of ``w``).
    """
    _check_shapes(logprobs, old_logprobs, advantages, mask)
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"need eps_low >= 0 and eps_high >= 0, got {eps_low}, {eps_high}")
    keep = mask.bool()  # [B, L]
    with torch.no_grad():  # the weight is a constant of the update: sg(.)
        log_ratio = torch.where(keep, logprobs - old_logprobs, 0.0)  # [B, L]; pad -> r 1
        log_ratio = log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)  # [B, L]
        ratio = torch.exp(log_ratio)  # [B, L]
        weight = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # [B, L]
    live = torch.where(keep, logprobs, 0.0)  # [B, L]; inf/NaN padding never enters autograd
    adv = advantages.detach().to(live.dtype).unsqueeze(1)  # [B, 1]
    loss_tokens = -weight.to(live.dtype) * adv * live  # [B, L]
    if is_weights is not None:
        loss_tokens = loss_tokens * is_weights.detach().to(loss_tokens.dtype)  # [B, L]
    loss = aggregate(loss_tokens, mask, agg, max_tokens, denom)  # []

    with torch.no_grad():
        high = keep & (ratio > 1.0 + eps_high)  # [B, L]
        low = keep & (ratio < 1.0 - eps_low)  # [B, L]
        stats = _token_stats(loss, keep, ratio, log_ratio, high | low, high, low)
        stats["is_weight_mean"] = float(masked_mean(weight, keep).item())
    return loss, stats


class PolicyLoss(Protocol):
    """The signature :func:`policy_loss`, :func:`gspo_loss` and :func:`cispo_loss` share."""

    def __call__(
        self,
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
    ) -> tuple[Tensor, dict[str, float]]: ...


# ``algo.policy_loss`` -> the loss; ppo is the clipped token-level surrogate (GRPO/DAPO).
POLICY_LOSSES: dict[str, PolicyLoss] = {"ppo": policy_loss, "gspo": gspo_loss, "cispo": cispo_loss}

# The stats each loss reports beyond the common ones (the train step logs them as policy/<key>).
EXTRA_STATS: dict[str, tuple[str, ...]] = {
    "ppo": (),
    "gspo": ("seq_clipfrac", "seq_clipfrac_high", "seq_clipfrac_low", "seq_ratio_max"),
    "cispo": ("is_weight_mean",),
}


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
    ``is_clamped_high_frac``, and the untruncated ratio's ``ratio_max``, ``ratio_min`` and
    ``ratio_std``.
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
            # the ratio's spread before truncation (asynchronous rollouts widen it)
            "ratio_max": float(raw[keep].max().item()) if keep.any() else 1.0,
            "ratio_min": float(raw[keep].min().item()) if keep.any() else 1.0,
            "ratio_std": float(raw[keep].std(unbiased=False).item()) if keep.any() else 0.0,
        }
    return weights.detach(), stats
