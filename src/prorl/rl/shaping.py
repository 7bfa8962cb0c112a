"""Reward shaping (training only): format credit, overlong handling and ProRL v2's cyclic
cosine length penalty.

Both act on the task rewards of one batch of samples before dynamic-sampling filtering and
advantages, so a group whose task rewards are all equal can become informative (and the
reverse). Choices the papers leave open are listed in ``docs/prolonged-runs.md``.

- **Format credit** (``format_reward``): a sample whose answer was given in the task's
  format (``Score.formatted``) but scored below the credit is raised to it: a bootstrap for
  models that rarely use the format, so early groups carry signal. It is never part of a
  task's score: validation and evaluation see correctness alone.
- **Overlong** (ProRL v1 runs 4-5): a response that hit the length cap without stopping
  (finish reason ``length``) gets reward 0 (``zero``) or ``-overlong_penalty``
  (``penalty``), whatever its answer scored; ``none`` leaves it alone.
- **Cosine length penalty** (ProRL v2): ``eta(t) = eta_min + 0.5 (eta_max - eta_min)
  (1 + cos(pi t / T))`` with ``t`` the response length in tokens and ``T`` the cap
  (``rollout.max_new_tokens``); every sample's reward gets ``+ lambda * eta(t)``, after the
  overlong rule. It is switched on for ``on`` steps, then off for ``off`` steps, repeating
  from the start of the stage.
"""

from __future__ import annotations

import math

import torch

from prorl.config import ShapingConfig


def overlong_rewards(
    rewards: torch.Tensor, truncated: torch.Tensor, mode: str, penalty: float
) -> torch.Tensor:
    """Rewards [N] with truncated samples (bool [N]) set to 0 (``zero``) or ``-penalty``."""
    if mode == "none":
        return rewards
    value = 0.0 if mode == "zero" else -penalty
    return torch.where(truncated, torch.full_like(rewards, value), rewards)


def format_credit(rewards: torch.Tensor, formatted: torch.Tensor, credit: float) -> torch.Tensor:
    """Rewards [N] with every formatted sample (bool [N]) raised to at least ``credit``."""
    if credit <= 0:
        return rewards
    return torch.where(formatted, rewards.clamp(min=credit), rewards)


def cosine_eta(lengths: torch.Tensor, cap: int, eta_min: float, eta_max: float) -> torch.Tensor:
    """eta(t) per sample: eta_max at length 0 falling along a half cosine to eta_min at the
    cap (lengths beyond the cap count as the cap)."""
    frac = (lengths.to(torch.float64) / cap).clamp(0.0, 1.0)
    eta = eta_min + 0.5 * (eta_max - eta_min) * (1.0 + torch.cos(math.pi * frac))
    return eta.to(torch.float32)


def length_penalty_on(step: int, on_steps: int, off_steps: int) -> bool:
    """Whether the cycle is in its on phase at ``step`` (0-based, from the stage start):
    steps ``[0, on)`` on, ``[on, on + off)`` off, and so on; ``off`` 0 means always on."""
    if off_steps == 0:
        return True
    return step % (on_steps + off_steps) < on_steps


def shape_rewards(
    rewards: torch.Tensor,
    lengths: torch.Tensor,
    truncated: torch.Tensor,
    cfg: ShapingConfig,
    cap: int,
    step: int,
    formatted: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Shaped rewards [N] from task rewards [N], response lengths [N] (tokens), the
    truncation flags [N] and the format flags [N] (None: no sample formatted); ``step``
    counts from the stage start (for the on/off cycle). Format credit comes first, so the
    overlong rule still zeroes a truncated response.

    Stats: ``format_credit`` (the sum of reward the format credit added), ``overlong``
    (samples the overlong rule changed), ``length_penalty`` (the sum of ``lambda * eta``
    added), ``on`` (1.0 when the length penalty was applied)."""
    task = rewards.float()
    fmt = formatted if formatted is not None else torch.zeros_like(truncated)
    credited = format_credit(task, fmt, cfg.format_reward)
    shaped = overlong_rewards(credited, truncated, cfg.overlong, cfg.overlong_penalty)
    changed = truncated if cfg.overlong != "none" else torch.zeros_like(truncated)
    on = cfg.length_penalty > 0 and length_penalty_on(
        step, cfg.length_penalty_on_steps, cfg.length_penalty_off_steps
    )
    added = torch.zeros_like(shaped)
    if on:
        added = cfg.length_penalty * cosine_eta(
            lengths, cap, cfg.length_eta_min, cfg.length_eta_max
        )
    stats = {
        "format_credit": float((credited - task).sum()),
        "overlong": float(changed.sum()),
        "length_penalty": float(added.sum()),
        "on": float(on),
    }
    return shaped + added, stats
