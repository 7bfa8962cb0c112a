"""GSPO and CISPO policy losses against hand-computed numbers, and their selection by config."""

from __future__ import annotations

import math

import pytest
import torch

from prorl import config as prorl_config
from prorl import rl
from prorl.config import ConfigError, load_config
from prorl.rl import EXTRA_STATS, POLICY_LOSSES, cispo_loss, gspo_loss, policy_loss

F64 = torch.float64


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


# --- GSPO -------------------------------------------------------------------------------------


def test_gspo_ratio_is_the_geometric_mean_of_token_ratios() -> None:
    # token log ratios [0.2, -0.1] -> mean 0.05 -> s = e^0.05 = 1.051271; A = 1, bounds
    # 0.2/0.4: unclipped, every token's loss is -s -> loss -1.051271. Gradient of
    # -exp(mean(lp - old)) w.r.t. each lp: -s / |y| = -0.525636 (GSPO-token: sg[s] * dlog pi)
    lp = _t([[-1.0, -2.0]]).requires_grad_(True)
    old = _t([[-1.2, -1.9]])
    loss, stats = gspo_loss(lp, old, torch.ones(1, dtype=F64), torch.ones(1, 2), 0.2, 0.4)
    loss.backward()
    s = math.exp(0.05)
    assert loss.item() == pytest.approx(-s)
    assert lp.grad is not None
    torch.testing.assert_close(lp.grad, _t([[-s / 2, -s / 2]]))
    assert stats["seq_ratio_max"] == pytest.approx(s) and stats["seq_clipfrac"] == 0.0
    # the token ratios e^0.2 and e^-0.1 are reported as they are (ratio_max, approx_kl)
    assert stats["ratio_max"] == pytest.approx(math.exp(0.2))
    k3 = ((math.exp(0.2) - 1 - 0.2) + (math.exp(-0.1) - 1 + 0.1)) / 2  # 0.0113 + 0.0048
    assert stats["approx_kl"] == pytest.approx(k3)


def test_gspo_clips_whole_sequences_with_its_small_bounds() -> None:
    # GSPO's bounds 3e-4 / 4e-4 -> s clipped to [0.9997, 1.0004]. Three 2-token responses:
    # row 0: A = +1, log ratios [.001, .001] -> s = e^.001 = 1.0010005 > 1.0004: clipped,
    #        row loss -1.0004, gradient 0
    # row 1: A = -1, log ratios [-.001, -.001] -> s = 0.9990005 < 0.9997: min(-0.9990, -0.9997)
    #        = -0.9997 is the clipped term -> row loss +0.9997, gradient 0
    # row 2: A = +1, log ratios [.002, -.002] -> s = e^0 = 1: inside, row loss -1; each token's
    #        gradient -A * s / |y| / n_seq = -1/2/3 = -1/6. (PPO would clip its first token.)
    # seq-mean-token-mean: (-1.0004 + 0.9997 - 1) / 3 = -0.3335667
    lp = _t([[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]]).requires_grad_(True)
    old = lp.detach() - _t([[0.001, 0.001], [-0.001, -0.001], [0.002, -0.002]])
    adv = torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    mask = torch.ones(3, 2)
    loss, stats = gspo_loss(lp, old, adv, mask, 3e-4, 4e-4, "seq-mean-token-mean")
    loss.backward()
    assert loss.item() == pytest.approx((-1.0004 + 0.9997 - 1) / 3, rel=1e-9)
    assert lp.grad is not None
    torch.testing.assert_close(lp.grad, _t([[0, 0], [0, 0], [-1 / 6, -1 / 6]]))
    assert stats["seq_clipfrac"] == pytest.approx(2 / 3)
    assert stats["seq_clipfrac_high"] == pytest.approx(1 / 3)
    assert stats["seq_clipfrac_low"] == pytest.approx(1 / 3)
    assert stats["clipfrac"] == pytest.approx(4 / 6)  # tokens whose gradient is 0
    assert stats["seq_ratio_max"] == pytest.approx(math.exp(0.001))
    assert stats["ratio_max"] == pytest.approx(math.exp(0.002))
    # token-level PPO with the same bounds clips 5 of 6 tokens: both of rows 0 and 1, and
    # row 2's first (1.002 > 1.0004, A > 0); row 2's second (0.998, A > 0) is the
    # pessimistic side
    _, ppo = policy_loss(lp.detach(), old, adv, mask, 3e-4, 4e-4, "seq-mean-token-mean")
    assert ppo["clipfrac"] == pytest.approx(5 / 6)


def test_gspo_token_form_equals_the_sequence_objective() -> None:
    # GSPO's sequence objective written directly (not token-wise):
    # J = mean_i min(s_i A_i, clip(s_i) A_i), s_i = exp(sum_t m (lp - old) / sum_t m).
    # With agg seq-mean-token-mean the GSPO-token loss must have the same value and gradient.
    g = torch.Generator().manual_seed(0)
    lp0 = -torch.rand(4, 5, generator=g, dtype=F64) * 3
    old = lp0 + 0.1 * torch.randn(4, 5, generator=g, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5], dtype=F64)
    lo, hi = 0.03, 0.04

    lp_a = lp0.clone().requires_grad_(True)
    loss_a, stats = gspo_loss(lp_a, old, adv, mask, lo, hi, "seq-mean-token-mean")
    loss_a.backward()

    lp_b = lp0.clone().requires_grad_(True)
    m = mask.to(F64)
    s = torch.exp(((lp_b - old) * m).sum(1) / m.sum(1))
    loss_b = -torch.minimum(s * adv, s.clamp(1 - lo, 1 + hi) * adv).mean()
    loss_b.backward()

    torch.testing.assert_close(loss_a, loss_b)
    assert lp_a.grad is not None and lp_b.grad is not None
    torch.testing.assert_close(lp_a.grad, lp_b.grad)
    assert 0 < stats["seq_clipfrac"] < 1  # the example has clipped and unclipped sequences


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_on_policy_gspo_and_cispo_gradients_equal_ppo(agg: str) -> None:
    # old == current: every ratio is 1, nothing clips. PPO's token loss is -A * rho and
    # GSPO's -A * s (both value -A, gradient -A dlog pi); CISPO's is -1 * A * log pi (gradient
    # -A dlog pi too, the value differs). Same aggregation -> same gradient for all three.
    g = torch.Generator().manual_seed(1)
    lp0 = -torch.rand(3, 4, generator=g, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    grads, losses = {}, {}
    for name, fn in POLICY_LOSSES.items():
        lp = lp0.clone().requires_grad_(True)
        loss, _ = fn(lp, lp.detach(), adv, mask, 3e-4, 4e-4, agg, 4)
        loss.backward()
        grads[name], losses[name] = lp.grad, loss.item()
    torch.testing.assert_close(grads["gspo"], grads["ppo"])
    torch.testing.assert_close(grads["cispo"], grads["ppo"])
    assert losses["gspo"] == pytest.approx(losses["ppo"])


# --- CISPO ------------------------------------------------------------------------------------


def _cispo_one(ratio: float, adv: float, lp: float, eps_low: float, eps_high: float):
    logprobs = _t([[lp]]).requires_grad_(True)
    old = _t([[lp - math.log(ratio)]])
    loss, stats = cispo_loss(
        logprobs, old, torch.tensor([adv], dtype=F64), torch.ones(1, 1), eps_low, eps_high
    )
    loss.backward()
    assert logprobs.grad is not None
    return loss.item(), stats, float(logprobs.grad[0, 0])


def test_cispo_clipped_weight_keeps_the_gradient() -> None:
    # r = 3, bounds eps_low 1 (no lower bound), eps_high 1 -> w = sg(min(3, 2)) = 2; A = 1,
    # log pi = -0.5: loss = -2 * 1 * -0.5 = 1.0; gradient -w * A = -2. PPO would give 0 here.
    loss, stats, grad = _cispo_one(3.0, 1.0, -0.5, eps_low=1.0, eps_high=1.0)
    assert loss == pytest.approx(1.0) and grad == pytest.approx(-2.0)
    assert stats["clipfrac"] == 1.0 and stats["clipfrac_high"] == 1.0
    assert stats["clipfrac_low"] == 0.0
    assert stats["is_weight_mean"] == pytest.approx(2.0) and stats["ratio_max"] == pytest.approx(3)
    assert stats["approx_kl"] == pytest.approx(3 - 1 - math.log(3))  # 0.901388


def test_cispo_weight_is_a_constant_of_the_update() -> None:
    # r = 1.1 inside [0.8, 1.28]: w = 1.1; A = 1, log pi = -2: loss = -1.1 * 1 * -2 = 2.2 and
    # gradient -w * A = -1.1. Were w differentiated (r depends on log pi), the gradient would
    # gain -A * log pi * r = +2.2 and read +1.1.
    loss, stats, grad = _cispo_one(1.1, 1.0, -2.0, eps_low=0.2, eps_high=0.28)
    assert loss == pytest.approx(2.2) and grad == pytest.approx(-1.1)
    assert stats["clipfrac"] == 0.0


def test_cispo_lower_bound_and_no_lower_bound() -> None:
    # r = 0.5, A = -2, log pi = -1. eps_low 0.2 -> w = 0.8: loss = -0.8 * -2 * -1 = -1.6,
    # gradient -w * A = 1.6, counted as clipped low. eps_low 1 (or more) -> no lower bound,
    # w = 0.5: loss -1.0, gradient 1.0, not clipped.
    loss, stats, grad = _cispo_one(0.5, -2.0, -1.0, eps_low=0.2, eps_high=0.28)
    assert loss == pytest.approx(-1.6) and grad == pytest.approx(1.6)
    assert stats["clipfrac_low"] == 1.0 and stats["clipfrac_high"] == 0.0
    for eps_low in (1.0, 1.5):
        loss, stats, grad = _cispo_one(0.5, -2.0, -1.0, eps_low=eps_low, eps_high=0.28)
        assert loss == pytest.approx(-1.0) and grad == pytest.approx(1.0)
        assert stats["clipfrac"] == 0.0


def test_cispo_token_mean_over_ragged_batch() -> None:
    # row 0: one token, r = 3, A = 1, log pi -0.5; row 1: two tokens, r = [1.1, 0.5], A = -2,
    # log pi [-1, -2]; third position padding. eps_low 1 (no lower bound), eps_high 0.28:
    # w = [1.28 | 1.1, 0.5]; token losses -w A log pi = [0.64 | -2.2, -2.0];
    # token-mean (0.64 - 2.2 - 2.0) / 3 = -1.186667; gradient -w A / 3 = [-0.426667 | 0.733333,
    # 0.333333]
    lp = _t([[-0.5, 0.0], [-1.0, -2.0]]).requires_grad_(True)
    old = lp.detach() - _t([[math.log(3.0), 0.0], [math.log(1.1), math.log(0.5)]])
    mask = torch.tensor([[1, 0], [1, 1]])
    adv = torch.tensor([1.0, -2.0], dtype=F64)
    loss, stats = cispo_loss(lp, old, adv, mask, 1.0, 0.28)
    loss.backward()
    assert loss.item() == pytest.approx((0.64 - 2.2 - 2.0) / 3)
    assert lp.grad is not None
    torch.testing.assert_close(lp.grad, _t([[-1.28 / 3, 0.0], [2.2 / 3, 1.0 / 3]]))
    assert stats["clipfrac"] == pytest.approx(1 / 3) and stats["clipfrac_low"] == 0.0
    assert stats["is_weight_mean"] == pytest.approx((1.28 + 1.1 + 0.5) / 3)  # 0.96
    assert stats["ratio_mean"] == pytest.approx((3 + 1.1 + 0.5) / 3)
    k3 = (3 - 1 - math.log(3)) + (1.1 - 1 - math.log(1.1)) + (0.5 - 1 - math.log(0.5))
    assert stats["approx_kl"] == pytest.approx(k3 / 3)  # (0.9014 + 0.0047 + 0.1931) / 3
    assert stats["tokens"] == 3.0


# --- shared behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [gspo_loss, cispo_loss])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_padding_never_reaches_loss_stats_or_grad(fn, agg: str) -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, -4.0]])
    old = torch.tensor([[-1.2, -1.9, -3.0], [-0.4, -4.0, -4.0]])
    adv = torch.tensor([1.0, -0.5])

    def run(lp_: torch.Tensor, old_: torch.Tensor):
        p = lp_.clone().requires_grad_(True)
        loss, stats = fn(p, old_, adv, mask, 0.2, 0.28, agg, 3)
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


@pytest.mark.parametrize("fn", [gspo_loss, cispo_loss])
def test_is_weights_multiply_token_loss(fn) -> None:
    # on-policy, A = 1, two tokens with log pi 0: GSPO token loss -s * A = -1, CISPO
    # -1 * A * 0 = 0 (its value is the surrogate) but both gradients are -w_t * A / 2
    lp = torch.zeros(1, 2, requires_grad=True)
    w = torch.tensor([[2.0, 0.5]])
    loss, _ = fn(lp, lp.detach(), torch.ones(1), torch.ones(1, 2), 0.2, 0.4, is_weights=w)
    loss.backward()
    assert loss.item() == pytest.approx(-1.25 if fn is gspo_loss else 0.0)
    assert lp.grad is not None
    torch.testing.assert_close(lp.grad, torch.tensor([[-1.0, -0.25]]))


@pytest.mark.parametrize("fn", [gspo_loss, cispo_loss])
def test_empty_mask_is_zero_not_nan(fn) -> None:
    lp = torch.zeros(2, 3, requires_grad=True)
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        loss, stats = fn(lp, lp.detach(), torch.ones(2), torch.zeros(2, 3), 0.2, 0.4, agg, 3)
        loss.backward()
        assert loss.item() == 0.0 and all(v == 0.0 for v in stats.values())


def test_bad_bounds_and_shapes() -> None:
    x, m = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match="0 <= eps_low < 1"):
        gspo_loss(x, x, torch.zeros(1), m, 1.0, 0.4)
    with pytest.raises(ValueError, match="eps_low >= 0"):
        cispo_loss(x, x, torch.zeros(1), m, -0.1, 0.4)
    for fn in (gspo_loss, cispo_loss):
        with pytest.raises(ValueError, match="advantages must be"):
            fn(x, x, torch.zeros(2), m, 0.2, 0.4)


def test_registry_matches_config_and_stats() -> None:
    assert POLICY_LOSSES["ppo"] is policy_loss  # the default path calls the same function
    assert set(POLICY_LOSSES) == set(prorl_config.POLICY_LOSSES) == set(EXTRA_STATS)
    assert set(rl.ADVANTAGES) == set(prorl_config.ADVANTAGES)
    lp = torch.zeros(1, 2, requires_grad=True)
    for name, fn in POLICY_LOSSES.items():  # every stat the train step logs exists
        _, stats = fn(lp, lp.detach(), torch.ones(1), torch.ones(1, 2), 0.2, 0.4)
        common = {"clipfrac", "clipfrac_high", "clipfrac_low", "ratio_max", "approx_kl"}
        assert common | set(EXTRA_STATS[name]) <= set(stats)


def test_config_selects_and_checks_the_loss() -> None:
    assert load_config(None, []).algo.policy_loss == "ppo"
    assert load_config(None, ["algo.policy_loss=gspo"]).algo.policy_loss == "gspo"
    with pytest.raises(ConfigError, match="algo.policy_loss: choose one of ppo, gspo, cispo"):
        load_config(None, ["algo.policy_loss=grpo"])
    # a clipped ratio (ppo, gspo) needs eps_low < 1; a CISPO weight's lower bound may vanish
    for loss in ("ppo", "gspo"):
        with pytest.raises(ConfigError, match=r"algo.eps_low: must be in \[0, 1\)"):
            load_config(None, [f"algo.policy_loss={loss}", "algo.eps_low=1.0"])
    cfg = load_config(None, ["algo.policy_loss=cispo", "algo.eps_low=1.0", "algo.eps_high=2"])
    assert (cfg.algo.eps_low, cfg.algo.eps_high) == (1.0, 2.0)
    with pytest.raises(ConfigError, match="algo.eps_low: must be >= 0"):
        load_config(None, ["algo.policy_loss=cispo", "algo.eps_low=-1"])


# --- end to end on the tiny model ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "extra_keys"),
    [
        # GSPO with the paper's bounds and its sequence-mean aggregation
        (
            [
                "algo.policy_loss=gspo",
                "algo.eps_low=3e-4",
                "algo.eps_high=4e-4",
                "algo.loss_agg=seq-mean-token-mean",
            ],
            [
                "policy/seq_clipfrac",
                "policy/seq_clipfrac_high",
                "policy/seq_clipfrac_low",
                "policy/seq_ratio_max",
            ],
        ),
        # CISPO without a lower bound, beside truncated IS (its own, separate weight)
        (
            [
                "algo.policy_loss=cispo",
                "algo.eps_low=1.0",
                "algo.eps_high=0.28",
                "algo.truncated_is=true",
            ],
            ["policy/is_weight_mean", "rollout/tis_weight_mean"],
        ),
        # RLOO advantages with the default loss
        (["algo.advantage=rloo"], []),
    ],
    ids=["gspo", "cispo", "rloo"],
)
def test_tiny_training_runs_and_logs_finite_metrics(tmp_path, overrides, extra_keys) -> None:
    from prorl.metrics import read_jsonl
    from prorl.runtime import run_training
    from test_train import TOY

    # two mini-batches: the second one's ratios differ from 1, so clipping is exercised
    cfg = load_config(
        None,
        [
            *TOY,
            "data.val_problems=1",
            "eval.n=1",
            "steps=2",
            "optim.lr=1e-2",
            "algo.kl_coef=1e-3",
            "algo.mini_batches=2",
            f"run_dir={tmp_path / 'run'}",
            *overrides,
        ],
    )
    run_training(cfg, live=False)
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss/pg" in r]
    assert [r["step"] for r in rows] == [1, 2]
    common = [
        "loss/pg",
        "policy/kl",
        "policy/entropy",
        "policy/clipfrac",
        "policy/approx_kl",
        "policy/ratio_max",
        "optim/grad_norm",
    ]
    for r in rows:
        for key in common + extra_keys:
            assert isinstance(r.get(key), float) and math.isfinite(r[key]), (key, r.get(key))
    assert rows[-1]["policy/kl"] > 0  # the policy moved away from the reference
    if "policy/seq_clipfrac" in extra_keys:
        assert 0 <= rows[-1]["policy/seq_clipfrac"] <= 1
    assert not (tmp_path / "run" / "wandb").exists()  # logging.wandb is off by default
