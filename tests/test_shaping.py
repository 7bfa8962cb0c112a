"""Reward shaping: overlong rule, cosine length penalty and its on/off cycle, against
hand-computed numbers; the step's wiring of task and shaped rewards."""

import math

import pytest
import torch

from prorl import rl
from prorl.config import ConfigError, ShapingConfig, load_config
from prorl.rollouts import PromptGroup, rollout_metrics, shape
from prorl.types import Example, Sample, Score

REWARDS = torch.tensor([1.0, 0.5, 0.0, 1.0])
TRUNC = torch.tensor([False, True, True, False])


def test_overlong_modes():
    assert rl.overlong_rewards(REWARDS, TRUNC, "none", 1.0).tolist() == [1.0, 0.5, 0.0, 1.0]
    assert rl.overlong_rewards(REWARDS, TRUNC, "zero", 1.0).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert rl.overlong_rewards(REWARDS, TRUNC, "penalty", 0.5).tolist() == [1.0, -0.5, -0.5, 1.0]


def test_cosine_eta_hand_values():
    lengths = torch.tensor([0, 25, 50, 100, 150])
    eta = rl.cosine_eta(lengths, 100, eta_min=-1.0, eta_max=0.0)
    # -1 + 0.5 * (1 + cos(pi t / 100)): t=25 -> -1 + 0.5 * 1.70710678 = -0.14644661
    assert eta.tolist() == pytest.approx([0.0, -0.14644661, -0.5, -1.0, -1.0], abs=1e-7)
    # a bonus that shrinks with length: 0.2 + 0.4 * (1 + cos(pi/2)) = 0.6 at half the cap
    assert rl.cosine_eta(torch.tensor([50]), 100, 0.2, 1.0).item() == pytest.approx(0.6)


def test_on_off_cycle():
    assert [rl.length_penalty_on(s, 2, 3) for s in range(10)] == [
        True,
        True,
        False,
        False,
        False,
        True,
        True,
        False,
        False,
        False,
    ]
    assert all(rl.length_penalty_on(s, 0, 0) for s in range(5))  # no cycle: always on
    assert all(rl.length_penalty_on(s, 3, 0) for s in range(5))


def test_shape_rewards_combined():
    cfg = ShapingConfig(
        overlong="penalty",
        overlong_penalty=1.0,
        length_penalty=0.5,
        length_penalty_on_steps=1,
        length_penalty_off_steps=1,
    )
    rewards, lengths = torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 50, 100, 25])
    trunc = torch.tensor([False, False, True, False])
    shaped, stats = rl.shape_rewards(rewards, lengths, trunc, cfg, cap=100, step=0)
    # 1 + 0.5*0, 0 + 0.5*-0.5, -1 (truncated) + 0.5*-1, 1 + 0.5*-0.14644661
    assert shaped.tolist() == pytest.approx([1.0, -0.25, -1.5, 0.92677670], abs=1e-6)
    assert stats["overlong"] == 1.0 and stats["on"] == 1.0
    assert stats["length_penalty"] == pytest.approx(-0.25 - 0.5 - 0.0732233, abs=1e-6)
    shaped, stats = rl.shape_rewards(rewards, lengths, trunc, cfg, cap=100, step=1)  # off
    assert shaped.tolist() == [1.0, 0.0, -1.0, 1.0]
    assert stats == {"format_credit": 0.0, "overlong": 1.0, "length_penalty": 0.0, "on": 0.0}
    off = ShapingConfig()  # the default changes nothing
    shaped, stats = rl.shape_rewards(rewards, lengths, trunc, off, cap=100, step=0)
    assert shaped.tolist() == rewards.tolist() and stats["overlong"] == stats["on"] == 0.0


def test_format_credit_hand_values():
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.05, 0.5])
    formatted = torch.tensor([True, False, True, True, True])
    assert rl.format_credit(rewards, formatted, 0.1).tolist() == pytest.approx(
        [0.1, 0.0, 1.0, 0.1, 0.5]
    )
    assert rl.format_credit(rewards, formatted, 0.0).tolist() == rewards.tolist()


def test_format_credit_is_training_only():
    """A formatted wrong answer's training reward is raised, a truncated one still zeroed;
    train/reward stays the task's score and the credit is its own metric."""
    g = _group([0.0, 0.0, 1.0, 0.0], ["stop", "stop", "stop", "length"], [3, 3, 3, 8])
    g.scores = [
        Score(0.0, "wrong", formatted=True),
        Score(0.0, "format", formatted=False),
        Score(1.0, "ok", formatted=True),
        Score(0.0, "wrong", formatted=True),
    ]
    shape([g], ShapingConfig(format_reward=0.1, overlong="zero"), cap=8, step_in_stage=0)
    assert g.rewards == [0.0, 0.0, 1.0, 0.0]
    assert g.train_rewards == pytest.approx([0.1, 0.0, 1.0, 0.0])
    m = rollout_metrics([g], rl.DynamicBatch(1, 1))
    assert m["train/reward"] == 0.25  # correctness only
    assert m["train/format_credit"] == pytest.approx(0.2 / 4)  # 0.1 twice, over 4 samples
    assert m["train/format_rate"] == 0.75


def _group(rewards, finish, lengths, reasons=None):
    ex = Example("u1", "toy", ({"role": "user", "content": "q"},), "a")
    samples = [
        Sample(tuple(range(n)), tuple([0.0] * n), "x", f)
        for f, n in zip(finish, lengths, strict=True)
    ]
    scores = [
        Score(r, reason)
        for r, reason in zip(rewards, reasons or ["ok"] * len(rewards), strict=True)
    ]
    return PromptGroup(ex, [1, 2], samples, scores)


def test_step_shapes_before_filtering_and_keeps_task_reward():
    """A group whose task rewards are all 1 becomes informative once the truncated sample
    is zeroed; the task reward metric stays the verifier's, the shaped one is logged apart;
    an INFRA_ERROR sample takes the mean of the valid shaped rewards."""
    g = _group(
        [1.0, 1.0, 1.0, 0.0],
        ["stop", "length", "stop", "stop"],
        [3, 8, 2, 4],
        reasons=["ok", "ok", "ok", "INFRA_ERROR"],
    )
    assert not rl.is_informative(g.train_rewards)
    shape([g], ShapingConfig(overlong="zero"), cap=8, step_in_stage=0)
    assert g.rewards == [1.0, 1.0, 1.0, 1.0]  # infra error filled with the valid mean
    assert g.train_rewards == pytest.approx([1.0, 0.0, 1.0, 2 / 3])
    assert rl.is_informative(g.train_rewards)
    batch = rl.DynamicBatch(1, 1)
    batch.add([g], [g.train_rewards])
    m = rollout_metrics([g], batch)
    assert m["train/reward"] == 1.0  # the verifier's rewards of the 3 valid samples
    assert m["train/reward_shaped"] == pytest.approx(2 / 3)
    assert m["shaping/overlong_frac"] == 0.25 and m["shaping/length_penalty_on"] == 0.0


def test_length_penalty_in_step():
    g = _group([1.0, 1.0], ["stop", "length"], [0, 8])
    cfg = ShapingConfig(length_penalty=0.1, length_penalty_on_steps=2, length_penalty_off_steps=2)
    shape([g], cfg, cap=8, step_in_stage=1)
    assert g.train_rewards == pytest.approx([1.0, 0.9])  # eta 0 at length 0, -1 at the cap
    shape([g], cfg, cap=8, step_in_stage=2)  # the off phase
    assert g.train_rewards == [1.0, 1.0]
    m = rollout_metrics([g], rl.DynamicBatch(1, 1))
    assert m["shaping/length_penalty_mean"] == 0.0 and m["shaping/length_penalty_on"] == 0.0
    assert math.isclose(m["train/reward_shaped"], 1.0)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("shaping.overlong=cut", "shaping.overlong: choose one of none, zero, penalty"),
        ("shaping.length_penalty=-1", "shaping.length_penalty: must be >= 0"),
        ("shaping.length_penalty_off_steps=5", "needs length_penalty_on_steps > 0"),
        ("shaping.format_reward=1", "shaping.format_reward: must be in"),
    ],
)
def test_bad_shaping_config(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config("debug", [override])
