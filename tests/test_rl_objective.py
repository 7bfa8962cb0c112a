"""``rl.rl_objective``: the micro-batch loss pg + kl_coef * kl, against hand-computed values."""

import math

import pytest
import torch

from prorl.rl import POLICY_LOSSES, rl_objective

# one response of 3 tokens, the last one padding (mask 0, any value)
LP = [[math.log(0.5), math.log(0.25), 5.0]]
REF = [[math.log(0.25), math.log(0.25), -5.0]]
MASK = torch.tensor([[1.0, 1.0, 0.0]])
ADV = torch.tensor([2.0])
K3_TOKEN1 = 0.5 - 1 + math.log(2)  # x = log 2: exp(-x) - 1 + x


def _lp() -> torch.Tensor:
    return torch.tensor(LP, requires_grad=True)


def test_objective_is_pg_plus_weighted_kl_by_hand():
    lp = _lp()
    loss, stats = rl_objective(
        "ppo", lp, lp.detach(), ADV, MASK, 0.2, 0.2, ref_logprobs=torch.tensor(REF), kl_coef=0.1
    )
    # ratio 1 on both tokens: pg = -A = -2 per token, token-mean -2; KL = (k3 + 0) / 2
    assert stats["pg_loss"] == pytest.approx(-2.0)
    assert stats["kl"] == pytest.approx(K3_TOKEN1 / 2)
    assert float(loss.detach()) == pytest.approx(-2.0 + 0.1 * K3_TOKEN1 / 2)
    loss.backward()
    # d/dlp: pg -A/2 per token; k3' = 1 - exp(-x): 0.5 on token 1, 0 on token 2; padding 0
    assert lp.grad.tolist()[0] == pytest.approx([-1.0 + 0.1 * 0.5 / 2, -1.0, 0.0])


def test_objective_normalises_kl_like_the_policy_loss_and_reports_the_plain_mean():
    lp = _lp()
    loss, stats = rl_objective(
        "ppo",
        lp,
        lp.detach(),
        ADV,
        MASK,
        0.2,
        0.2,
        denom=4.0,
        ref_logprobs=torch.tensor(REF),
        kl_coef=0.1,
    )
    # a micro-batch of a mini-batch with 4 tokens in all: both sums are divided by 4
    assert float(loss.detach()) == pytest.approx(-4.0 / 4 + 0.1 * K3_TOKEN1 / 4)
    assert stats["kl"] == pytest.approx(K3_TOKEN1 / 2)  # the metric: mean over its tokens


def test_objective_without_reference_is_the_policy_loss():
    for name, fn in POLICY_LOSSES.items():
        lp = _lp()
        old = lp.detach() - 0.1
        loss, stats = rl_objective(name, lp, old, ADV, MASK, 0.2, 0.3)
        want, want_stats = fn(lp, old, ADV, MASK, 0.2, 0.3)
        assert (
            float(loss.detach()) == float(want.detach())
            and stats == want_stats
            and "kl" not in stats
        )


def test_a_tracked_kl_is_measured_but_not_in_the_loss():
    """algo.track_kl with kl_coef 0: stats["kl"] as usual, the loss and its gradient the
    policy loss's alone."""
    lp = _lp()
    loss, stats = rl_objective(
        "ppo", lp, lp.detach(), ADV, MASK, 0.2, 0.2, ref_logprobs=torch.tensor(REF), kl_coef=0.0
    )
    assert stats["kl"] == pytest.approx(K3_TOKEN1 / 2)
    assert float(loss.detach()) == pytest.approx(-2.0)
    loss.backward()
    assert lp.grad.tolist()[0] == pytest.approx([-1.0, -1.0, 0.0])
