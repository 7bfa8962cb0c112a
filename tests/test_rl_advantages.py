"""Advantage estimators against hand-computed numbers; all-equal groups give exact zeros."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.rl import (
    ADVANTAGES,
    compute_advantages,
    drgrpo_advantages,
    grpo_advantages,
    reinforce_pp_baseline_advantages,
)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_grpo_hand_values_bessel_std() -> None:
    # group [1, 0, 0, 0]: mean 0.25; deviations 0.75, -0.25 x3; sum sq = 0.5625 + 3*0.0625 = 0.75
    # Bessel var = 0.75 / 3 = 0.25 -> std 0.5 (population std would be 0.433: a different answer)
    # A = 0.75/0.5 = 1.5, -0.25/0.5 = -0.5. Group 2 [0, 1, 1, 0]: mean .5, sum sq 1, var 1/3,
    # std 0.57735 -> A = -+0.5/0.57735 = -+0.866025
    adv = grpo_advantages(t(1, 0, 0, 0, 0, 1, 1, 0), group_size=4, eps=0.0)
    s = 0.5 / math.sqrt(1 / 3)
    expected = t(1.5, -0.5, -0.5, -0.5, -s, s, s, -s)
    torch.testing.assert_close(adv, expected)


def test_grpo_eps_in_denominator() -> None:
    # [2, 0]: mean 1, Bessel std = sqrt((1 + 1) / 1) = 1.41421; with eps=1: 1 / 2.41421
    adv = grpo_advantages(t(2, 0), group_size=2, eps=1.0)
    torch.testing.assert_close(adv, t(1 / (math.sqrt(2) + 1), -1 / (math.sqrt(2) + 1)))


def test_drgrpo_only_centres() -> None:
    # [1, 0, 0, 0] -> mean .25 -> [.75, -.25, -.25, -.25]; [3, 5] -> mean 4 -> [-1, 1]
    adv = drgrpo_advantages(t(1, 0, 0, 0), group_size=4)
    torch.testing.assert_close(adv, t(0.75, -0.25, -0.25, -0.25))
    torch.testing.assert_close(drgrpo_advantages(t(3, 5), 2), t(-1, 1))


def test_reinforce_pp_baseline_hand_values() -> None:
    # groups [1,0,0,0] and [1,1,1,1]: centred [.75,-.25,-.25,-.25, 0,0,0,0], batch mean 0,
    # sum sq 0.75, Bessel var over 8 values = 0.75/7 -> std 0.327327; .75/.327327 = 2.291288
    adv = reinforce_pp_baseline_advantages(t(1, 0, 0, 0, 1, 1, 1, 1), group_size=4, eps=0.0)
    std = math.sqrt(0.75 / 7)
    expected = t(0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0, 0, 0, 0)
    torch.testing.assert_close(adv, expected)
    assert adv[4:].eq(0).all()  # the all-equal group stays exactly 0


def test_reinforce_pp_normalises_across_batch_not_group() -> None:
    # groups [0, 2] and [0, 1]: centred [-1, 1, -.5, .5]; batch std = sqrt(2.5/3) = 0.912871.
    # Per-group GRPO would give +-0.7071 in both groups; here the groups keep their scale ratio 2.
    adv = reinforce_pp_baseline_advantages(t(0, 2, 0, 1), group_size=2, eps=0.0)
    std = math.sqrt(2.5 / 3)
    torch.testing.assert_close(adv, t(-1 / std, 1 / std, -0.5 / std, 0.5 / std))


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_all_equal_groups_are_exactly_zero(name: str) -> None:
    # 0.1 * 3 / 3 != 0.1 in floating point: without the explicit zeroing the residue / eps
    # would leak a ~1e-11 signal. Every group here is constant.
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.0, 0.0, 0.0], dtype=torch.float32)
    adv = compute_advantages(name, rewards, 3)
    assert adv.shape == (9,)
    assert torch.equal(adv, torch.zeros(9))


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_mixed_batch_zero_for_constant_group_and_finite(name: str) -> None:
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.5])
    adv = compute_advantages(name, rewards, 3)
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[:3], torch.zeros(3))
    assert adv[3] > 0 > adv[4]
    # within an informative group the advantages sum to zero (mean subtracted)
    assert abs(float(adv[3:].sum())) < 1e-6


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_group_size_one_is_zero_not_nan(name: str) -> None:
    adv = compute_advantages(name, torch.tensor([1.0, 0.0, 0.5]), 1)
    assert torch.equal(adv, torch.zeros(3))


def test_layout_is_group_contiguous() -> None:
    # [1, 0, 0, 0], group_size 2: contiguous groups (1, 0), (0, 0) -> [.5, -.5, 0, 0].
    # An interleaved reading (rows i and i + G together) would give [.5, 0, -.5, 0].
    adv = drgrpo_advantages(t(1, 0, 0, 0), group_size=2)
    torch.testing.assert_close(adv, t(0.5, -0.5, 0, 0))


def test_unknown_name_and_bad_layout() -> None:
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*drgrpo.*grpo"):
        compute_advantages("ppo", t(1, 0), 2)
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        grpo_advantages(t(1, 0, 1), 4)
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        drgrpo_advantages(t(1, 0), 0)


def test_keeps_dtype_and_carries_no_grad() -> None:
    rewards = torch.tensor([1.0, 0.0], requires_grad=True)
    adv = grpo_advantages(rewards, 2)
    assert adv.dtype == torch.float32 and not adv.requires_grad
    assert grpo_advantages(torch.tensor([1, 0]), 2).dtype == torch.float32  # int rewards ok
