"""RLOO advantages (leave-one-out baseline) against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

from prorl.config import ConfigError, load_config
from prorl.rl import compute_advantages, drgrpo_advantages, rloo_advantages


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_rloo_hand_values() -> None:
    # [1, 0, 0, 0]: sample 0's baseline is mean(0, 0, 0) = 0 -> 1; each other sample's is
    # mean(1, 0, 0) = 1/3 -> -1/3.
    torch.testing.assert_close(rloo_advantages(t(1, 0, 0, 0), 4), t(1, -1 / 3, -1 / 3, -1 / 3))
    # [3, 5, 10]: baselines (5 + 10)/2 = 7.5, (3 + 10)/2 = 6.5, (3 + 5)/2 = 4
    # -> [-4.5, -1.5, 6]
    torch.testing.assert_close(rloo_advantages(t(3, 5, 10), 3), t(-4.5, -1.5, 6))
    # group size 2: [a, b] -> [a - b, b - a]
    torch.testing.assert_close(rloo_advantages(t(0.25, 1.0), 2), t(-0.75, 0.75))


def test_rloo_groups_are_contiguous_and_independent() -> None:
    # groups (1, 0) and (0, 0, ...): contiguous rows; the constant group gives exact zeros
    adv = rloo_advantages(t(1, 0, 0.1, 0.1), 2)
    torch.testing.assert_close(adv, t(1, -1, 0, 0))
    assert adv[2:].eq(0).all()


def test_rloo_is_drgrpo_scaled_by_n_over_n_minus_1() -> None:
    # r_i - (S - r_i)/(N - 1) = N/(N - 1) * (r_i - S/N): Dr.GRPO times 4/3 for N = 4
    rewards = torch.rand(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(rloo_advantages(rewards, 4), drgrpo_advantages(rewards, 4) * 4 / 3)


def test_rloo_by_name_and_config() -> None:
    torch.testing.assert_close(compute_advantages("rloo", t(1, 0), 2), t(1, -1))
    assert load_config(None, ["algo.advantage=rloo"]).algo.advantage == "rloo"
    with pytest.raises(ConfigError, match="algo.advantage: choose one of .*rloo"):
        load_config(None, ["algo.advantage=loo"])


def test_rloo_group_of_one_and_no_grad() -> None:
    assert torch.equal(rloo_advantages(torch.tensor([1.0, 0.0]), 1), torch.zeros(2))
    rewards = torch.tensor([1.0, 0.0], requires_grad=True)
    adv = rloo_advantages(rewards, 2)
    assert not adv.requires_grad and adv.dtype == torch.float32
