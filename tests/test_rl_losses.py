"""Clipped surrogate, aggregation modes and truncated IS weights against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.rl import (
    aggregate,
    grpo_advantages,
    masked_mean,
    policy_loss,
    truncated_is_weights,
)

E = math.e


def one_token(log_ratio: float, adv: float, eps_low: float = 0.2, eps_high: float = 0.4):
    """Loss, stats and d loss / d logprobs for a single token with the given log ratio."""
    logprobs = torch.tensor([[log_ratio - 1.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.0]], dtype=torch.float64)
    loss, stats = policy_loss(
        logprobs, old, torch.tensor([adv], dtype=torch.float64), torch.ones(1, 1), eps_low, eps_high
    )
    loss.backward()
    assert logprobs.grad is not None
    return loss.item(), stats, float(logprobs.grad[0, 0])


def test_positive_advantage_above_upper_bound_is_clipped() -> None:
    # ratio e, A = 1: min(e * 1, clip(e, .8, 1.4) * 1) = min(2.718, 1.4) = 1.4 -> loss -1.4;
    # the clipped branch is constant in theta -> gradient 0
    loss, stats, grad = one_token(1.0, 1.0)
    assert loss == pytest.approx(-1.4)
    assert grad == 0.0
    assert stats["clipfrac"] == 1.0 and stats["clipfrac_high"] == 1.0
    assert stats["clipfrac_low"] == 0.0
    assert stats["ratio_mean"] == pytest.approx(E) and stats["ratio_max"] == pytest.approx(E)
    # k3 of old vs new: rho - 1 - log rho = e - 1 - 1 = 0.718282
    assert stats["approx_kl"] == pytest.approx(E - 2)


def test_negative_advantage_below_lower_bound_is_clipped() -> None:
    # ratio 0.5, A = -1: min(-0.5, clip(0.5, .8, 1.4) * -1 = -0.8) = -0.8 -> loss 0.8, grad 0
    loss, stats, grad = one_token(math.log(0.5), -1.0)
    assert loss == pytest.approx(0.8)
    assert grad == 0.0
    assert stats["clipfrac"] == 1.0 and stats["clipfrac_low"] == 1.0
    assert stats["clipfrac_high"] == 0.0


def test_inside_bounds_is_unclipped_with_gradient() -> None:
    # ratio e^0.1 = 1.105171, A = 2: loss = -2 * 1.105171 = -2.210342;
    # d/dlogp (-A * exp(logp - old)) = -A * rho = -2.210342
    loss, stats, grad = one_token(0.1, 2.0)
    assert loss == pytest.approx(-2 * math.exp(0.1))
    assert grad == pytest.approx(-2 * math.exp(0.1))
    assert stats["clipfrac"] == 0.0


def test_decoupled_bounds_use_each_epsilon() -> None:
    # ratio 1.3, A = 1: inside [0.8, 1.4] -> unclipped, loss -1.3. With eps_high = 0.2
    # (symmetric PPO) the same token is clipped to 1.2 -> loss -1.2: clip-higher lets it grow.
    loss_hi, st_hi, _ = one_token(math.log(1.3), 1.0, eps_low=0.2, eps_high=0.4)
    loss_sym, st_sym, _ = one_token(math.log(1.3), 1.0, eps_low=0.2, eps_high=0.2)
    assert loss_hi == pytest.approx(-1.3) and st_hi["clipfrac"] == 0.0
    assert loss_sym == pytest.approx(-1.2) and st_sym["clipfrac"] == 1.0
    # ratio 0.75, A = -1: eps_low 0.2 -> clip to 0.8 -> loss 0.8; eps_low 0.3 -> loss 0.75
    assert one_token(math.log(0.75), -1.0, eps_low=0.2)[0] == pytest.approx(0.8)
    assert one_token(math.log(0.75), -1.0, eps_low=0.3)[0] == pytest.approx(0.75)


def test_pessimistic_side_stays_unclipped() -> None:
    # A > 0 with ratio 0.5 < 0.8: min(0.5, 0.8) = 0.5 is the unclipped term -> loss -0.5,
    # gradient -0.5 (the update may raise the token back), not counted as clipped
    loss, stats, grad = one_token(math.log(0.5), 1.0)
    assert loss == pytest.approx(-0.5) and grad == pytest.approx(-0.5)
    assert stats["clipfrac"] == 0.0
    # A < 0 with ratio e > 1.4: min(-e, -1.4) = -e -> loss e, gradient e
    loss, stats, grad = one_token(1.0, -1.0)
    assert loss == pytest.approx(E) and grad == pytest.approx(E)
    assert stats["clipfrac"] == 0.0


def _ragged():
    # row 0: one real token, row 1: three; rho = 1 everywhere so token loss = -A
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    logprobs = torch.full((2, 4), -0.7, requires_grad=True)
    return logprobs, mask


@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        # token losses: row 0 [-2], row 1 [1, 1, 1] (A = [2, -1])
        ("token-mean", (-2 + 3) / 4),  # 0.25: every token weighs the same
        ("seq-mean-token-mean", (-2 / 1 + 3 / 3) / 2),  # -0.5: every sequence weighs the same
        ("seq-mean-token-sum-norm", (-2 / 4 + 3 / 4) / 2),  # 0.125: constant max_tokens = 4
    ],
)
def test_agg_modes_on_unequal_lengths(agg: str, expected: float) -> None:
    logprobs, mask = _ragged()
    adv = torch.tensor([2.0, -1.0])
    loss, stats = policy_loss(logprobs, logprobs.detach(), adv, mask, 0.2, 0.4, agg, max_tokens=4)
    assert loss.item() == pytest.approx(expected)
    assert stats["tokens"] == 4.0 and stats["pg_loss"] == pytest.approx(expected)
    loss.backward()
    assert logprobs.grad is not None and logprobs.grad[mask == 0].eq(0).all()


def test_aggregate_hand_values_and_denominator_override() -> None:
    tokens = torch.tensor([[4.0, 9.0, 9.0, 9.0], [1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    assert float(aggregate(tokens, mask, "token-mean")) == pytest.approx(10 / 4)
    assert float(aggregate(tokens, mask, "seq-mean-token-mean")) == pytest.approx((4 + 2) / 2)
    assert float(aggregate(tokens, mask, "seq-mean-token-sum-norm", 8)) == pytest.approx(
        (4 / 8 + 6 / 8) / 2
    )
    # two micro-batches normalised by the mini-batch's token count add up to the full mean
    parts = [aggregate(tokens[i : i + 1], mask[i : i + 1], "token-mean", denom=4) for i in (0, 1)]
    assert float(sum(parts)) == pytest.approx(10 / 4)
    # a fully padded row is not a sequence: (4 + 2) / 2, not / 3
    tokens3 = torch.cat([tokens, torch.full((1, 4), 5.0)])
    mask3 = torch.cat([mask, torch.zeros(1, 4, dtype=mask.dtype)])
    assert float(aggregate(tokens3, mask3, "seq-mean-token-mean")) == pytest.approx(3.0)


def test_agg_errors() -> None:
    x, m = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match="needs a positive max_tokens"):
        aggregate(x, m, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="unknown agg 'mean'.*token-mean"):
        aggregate(x, m, "mean")
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(x, x, torch.zeros(2), m, 0.2, 0.4)
    with pytest.raises(ValueError, match="same"):
        policy_loss(x, torch.zeros(1, 3), torch.zeros(1), m, 0.2, 0.4)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_padding_never_reaches_loss_stats_or_grad(agg: str) -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, -4.0]])
    old = torch.tensor([[-1.2, -1.9, -3.0], [-0.4, -4.0, -4.0]])
    adv = torch.tensor([1.0, -0.5])

    def run(lp_: torch.Tensor, old_: torch.Tensor):
        p = lp_.clone().requires_grad_(True)
        loss, stats = policy_loss(p, old_, adv, mask, 0.2, 0.28, agg, max_tokens=3)
        loss.backward()
        return loss, stats, p.grad

    base_loss, base_stats, base_grad = run(lp, old)
    junk = mask == 0
    lp2 = lp.masked_fill(junk, 50.0)
    old2 = old.masked_fill(junk, float("nan"))
    lp2[0, 2] = float("inf")
    loss, stats, grad = run(lp2, old2)
    assert loss.item() == base_loss.item()
    assert stats == base_stats
    assert grad is not None and base_grad is not None
    assert torch.isfinite(grad).all() and torch.equal(grad, base_grad)
    assert grad[junk].eq(0).all() and grad[~junk].ne(0).all()


def test_all_equal_rewards_give_zero_loss_and_zero_gradient() -> None:
    adv = grpo_advantages(torch.tensor([1.0, 1.0, 1.0, 1.0]), group_size=4)  # [0, 0, 0, 0]
    lp = torch.randn(4, 5, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    old = lp.detach() + 0.3
    loss, stats = policy_loss(lp, old, adv, torch.ones(4, 5), 0.2, 0.4)
    loss.backward()
    assert loss.item() == 0.0
    assert lp.grad is not None and lp.grad.eq(0).all()
    assert stats["clipfrac"] == 0.0  # A = 0: neither branch is strictly smaller


def test_is_weights_multiply_token_loss() -> None:
    # two tokens, rho 1, A = 1 -> token loss -1 each; weights [2, 0.5] -> (-2 - 0.5) / 2
    lp = torch.zeros(1, 2, requires_grad=True)
    w = torch.tensor([[2.0, 0.5]])
    loss, _ = policy_loss(lp, lp.detach(), torch.ones(1), torch.ones(1, 2), 0.2, 0.4, is_weights=w)
    assert loss.item() == pytest.approx(-1.25)
    loss.backward()
    assert lp.grad is not None
    torch.testing.assert_close(lp.grad, torch.tensor([[-1.0, -0.25]]))  # -w * rho * A / 2


def test_empty_mask_is_zero_not_nan() -> None:
    lp = torch.zeros(2, 3, requires_grad=True)
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        loss, stats = policy_loss(
            lp, lp.detach(), torch.ones(2), torch.zeros(2, 3), 0.2, 0.4, agg, 3
        )
        loss.backward()
        assert loss.item() == 0.0 and all(v == 0.0 for v in stats.values())
        assert all(isinstance(v, float) for v in stats.values())


def test_masked_mean() -> None:
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [0, 0, 1]])
    assert float(masked_mean(x, m)) == pytest.approx((1 + 2 + 6) / 3)
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([1.5, 6.0]))
    torch.testing.assert_close(masked_mean(x, torch.zeros(2, 3), dim=1), torch.zeros(2))


def test_truncated_is_weights_hand_values() -> None:
    # log ratios [ln 2, ln 10, ln .25, 0, (pad)] -> raw [2, 10, .25, 1] -> clamp [2, 5, .5, 1]
    ratios = torch.tensor([[2.0, 10.0, 0.25, 1.0, 1e6]])
    sampler = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.0]])
    trainer = sampler + ratios.log()
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    w, stats = truncated_is_weights(trainer, sampler, mask)
    torch.testing.assert_close(w, torch.tensor([[2.0, 5.0, 0.5, 1.0, 1.0]]))
    abs_lr = [math.log(2), math.log(10), math.log(4), 0.0]
    assert stats["mismatch_abs_mean"] == pytest.approx(sum(abs_lr) / 4, rel=1e-5)
    assert stats["mismatch_abs_max"] == pytest.approx(math.log(10), rel=1e-5)  # pad ignored
    assert stats["is_weight_mean"] == pytest.approx((2 + 5 + 0.5 + 1) / 4)
    assert stats["is_clamped_frac"] == 0.5
    assert stats["is_clamped_low_frac"] == 0.25 and stats["is_clamped_high_frac"] == 0.25
    # the untruncated ratio's spread over the 4 real tokens: [2, 10, .25, 1], mean 3.3125
    assert stats["ratio_max"] == pytest.approx(10.0, rel=1e-5)
    assert stats["ratio_min"] == pytest.approx(0.25, rel=1e-5)
    var = sum((x - 3.3125) ** 2 for x in (2, 10, 0.25, 1)) / 4
    assert stats["ratio_std"] == pytest.approx(math.sqrt(var), rel=1e-5)
    assert not w.requires_grad


def test_truncated_is_weights_identical_and_bad_bounds() -> None:
    lp = torch.randn(3, 4)
    w, stats = truncated_is_weights(lp, lp, torch.ones(3, 4))
    assert torch.equal(w, torch.ones(3, 4))
    assert stats["mismatch_abs_max"] == 0.0 and stats["is_clamped_frac"] == 0.0
    assert stats["ratio_max"] == stats["ratio_min"] == 1.0 and stats["ratio_std"] == 0.0
    with pytest.raises(ValueError, match="low <= 1 <= high"):
        truncated_is_weights(lp, lp, torch.ones(3, 4), low=2.0, high=5.0)


def test_truncated_is_weights_one_sided_cap() -> None:
    # low=0: w = min(ratio, high) (Yao et al.'s truncated IS); ratios [0.01, 0.5, 3, 7], cap 2
    ratios = torch.tensor([[0.01, 0.5, 3.0, 7.0]])
    sampler = torch.full((1, 4), -2.0)
    w, stats = truncated_is_weights(sampler + ratios.log(), sampler, torch.ones(1, 4), 0.0, 2.0)
    torch.testing.assert_close(w, torch.tensor([[0.01, 0.5, 2.0, 2.0]]))
    assert stats["is_clamped_low_frac"] == 0.0 and stats["is_clamped_high_frac"] == 0.5
    assert stats["is_weight_mean"] == pytest.approx((0.01 + 0.5 + 2 + 2) / 4, rel=1e-5)
