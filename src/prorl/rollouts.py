"""A step's rollouts: each prompt's group of scored samples, their reward shaping, the
rollout metrics, and the ``RolloutBatch`` the policy update consumes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from prorl import rl
from prorl.config import ShapingConfig
from prorl.types import Example, Sample, Score


@dataclass
class PromptGroup:
    """One prompt's ``rollout.n`` samples and their scores (GRPO's "group")."""

    example: Example
    prompt_ids: list[int]
    samples: list[Sample]
    scores: list[Score]
    shaped: list[float] | None = None  # rewards after shaping; None: the task rewards
    shaping: dict[str, float] = field(default_factory=dict)  # rl.shape_rewards' stats
    version: int = 0  # the policy that drew the samples: the step at whose start it was current

    @property
    def rewards(self) -> list[float]:
        """The task rewards."""
        return _fill_infra([s.reward for s in self.scores], self.scores)

    @property
    def train_rewards(self) -> list[float]:
        """What filtering and advantages see: the shaped rewards."""
        return self.rewards if self.shaped is None else _fill_infra(self.shaped, self.scores)


def _fill_infra(rewards: list[float], scores: list[Score]) -> list[float]:
    # INFRA_ERROR samples are excluded from the update; for the all-equal test and the
    # advantage they take the mean of the valid ones (so they move nothing).
    valid = [r for r, s in zip(rewards, scores, strict=True) if not s.is_infra_error]
    fill = sum(valid) / len(valid) if valid else 0.0
    return [fill if s.is_infra_error else r for r, s in zip(rewards, scores, strict=True)]


@dataclass(frozen=True)
class RolloutBatch:
    """The kept groups' sequences, flattened group by group, as the update reads them:
    sequence ``i`` is ``prompt_ids[i] + response_ids[i]``."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    sampler_logprobs: list[list[float]]  # the rollout engine's, per response token
    valid: list[bool]  # False: the verifier failed (INFRA_ERROR); no loss on it
    advantages: torch.Tensor  # [N]

    @classmethod
    def from_groups(cls, groups: list[PromptGroup], advantages: torch.Tensor) -> RolloutBatch:
        pairs = [(g, s, sc) for g in groups for s, sc in zip(g.samples, g.scores, strict=True)]
        return cls(
            prompt_ids=[g.prompt_ids for g, _, _ in pairs],
            response_ids=[list(s.token_ids) for _, s, _ in pairs],
            sampler_logprobs=[list(s.logprobs) for _, s, _ in pairs],
            valid=[not sc.is_infra_error for _, _, sc in pairs],
            advantages=advantages,
        )

    def __len__(self) -> int:
        return len(self.response_ids)

    @property
    def token_counts(self) -> list[float]:
        """Valid response tokens per sequence (0 for an invalid one)."""
        return [len(r) * float(v) for r, v in zip(self.response_ids, self.valid, strict=True)]


def shape(groups: list[PromptGroup], cfg: ShapingConfig, cap: int, step_in_stage: int) -> None:
    """Reward shaping (format credit, overlong rule, cyclic cosine length penalty) of each
    group's rewards; the task rewards stay in ``PromptGroup.rewards`` for the metrics."""
    for g in groups:
        shaped, g.shaping = rl.shape_rewards(
            torch.tensor(g.rewards),
            torch.tensor([len(s.token_ids) for s in g.samples]),
            torch.tensor([s.finish_reason == "length" for s in g.samples]),
            cfg,
            cap,
            step_in_stage,
            formatted=torch.tensor([sc.formatted is True for sc in g.scores]),
        )
        g.shaped = shaped.tolist()


def rollout_metrics(all_groups: list[PromptGroup], batch: rl.DynamicBatch) -> dict[str, float]:
    """Rewards over every scored sample (kept or not), shaping, lengths, verifier trouble
    and dynamic sampling's counts."""
    m: dict[str, float] = {}
    scores = [s for g in all_groups for s in g.scores]
    samples = [s for g in all_groups for s in g.samples]
    valid = [s.reward for s in scores if not s.is_infra_error]
    m["train/reward"] = float(np.mean(valid)) if valid else 0.0
    by_task: dict[str, list[float]] = defaultdict(list)
    for g in all_groups:
        by_task[g.example.task].extend(s.reward for s in g.scores if not s.is_infra_error)
    for task, rs in by_task.items():
        m[f"train/reward/{task}"] = float(np.mean(rs)) if rs else 0.0
    shaped = [
        r
        for g in all_groups
        for r, s in zip(g.train_rewards, g.scores, strict=True)
        if not s.is_infra_error
    ]
    m["train/reward_shaped"] = float(np.mean(shaped)) if shaped else 0.0
    n = max(1, sum(len(g.samples) for g in all_groups))
    flags = [s.formatted for s in scores if s.formatted is not None]
    if flags:  # tasks with an answer format: how often the answer came in it
        m["train/format_rate"] = float(np.mean(flags))
    # training-only reward added for answers in the task's format (shaping.format_reward)
    m["train/format_credit"] = sum(g.shaping.get("format_credit", 0.0) for g in all_groups) / n
    m["shaping/overlong_frac"] = sum(g.shaping.get("overlong", 0.0) for g in all_groups) / n
    m["shaping/length_penalty_mean"] = (
        sum(g.shaping.get("length_penalty", 0.0) for g in all_groups) / n
    )
    m["shaping/length_penalty_on"] = max((g.shaping.get("on", 0.0) for g in all_groups), default=0)
    lengths = [len(s.token_ids) for s in samples]
    m["response/length_mean"] = float(np.mean(lengths)) if lengths else 0.0
    m["response/length_max"] = float(max(lengths, default=0))
    m["response/truncated_frac"] = float(np.mean([s.finish_reason == "length" for s in samples]))
    m["verify/timeouts"] = float(sum(s.reason == "TIMEOUT" for s in scores))
    m["verify/infra_errors"] = float(sum(s.is_infra_error for s in scores))
    m.update(batch.metrics())  # filter/kept_frac: informative groups / groups seen
    return m
