"""One step's rollouts, drawn and scored: the dynamic-sampling loop of the RL step.

``collect_rollouts`` draws prompts from the task mix, generates ``rollout.n`` samples each,
scores and shapes them, and keeps refilling until the batch has enough informative groups.
The synchronous loop calls it for the step it is about to train; the asynchronous producer
(``prorl.producer``) calls it ahead of time from an older policy. It reads only its
arguments and advances only the mixture's cursor, so both give the same batch for the same
step and weights.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prorl import rl
from prorl.mixture import TaskMixture
from prorl.models import encode_prompts
from prorl.rollouts import PromptGroup, rollout_metrics, shape
from prorl.sampling.base import Sampler, derive_seed
from prorl.stages import Stage
from prorl.types import BatchScorer, Example, Sample, SamplingParams, Score


@dataclass
class StepRollouts:
    """What a step trains on, and what the rollouts measured.

    ``version``: the policy that drew every sample, named by the step at whose start it was
    current (the synchronous loop: the step itself; ``step - version`` is the staleness).
    ``cursor_before``: the mixture's cursor before the draw (an asynchronous redraw
    rewinds to it)."""

    step: int
    version: int
    kept: list[PromptGroup]
    sampled: list[str]  # the uid of every example drawn, kept or not
    metrics: dict[str, float]  # rollout metrics and the generate/score timings
    tokens: int = 0  # generated tokens, over every group (kept or not)
    cursor_before: dict[str, int] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        """A plain structure for a checkpoint (loads with ``torch.load(weights_only=True)``).
        The kept groups keep what the update reads: prompt and response tokens, the sampler's
        log-probs, rewards (task and shaped), verdicts and format flags; an example keeps
        its uid and task."""
        return {
            "step": self.step,
            "version": self.version,
            "sampled": list(self.sampled),
            "metrics": dict(self.metrics),
            "tokens": self.tokens,
            "cursor_before": dict(self.cursor_before),
            "kept": json.dumps([_group_state(g) for g in self.kept]),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> StepRollouts:
        return cls(
            step=int(d["step"]),
            version=int(d["version"]),
            kept=[_group_from(g) for g in json.loads(d["kept"])],
            sampled=list(d["sampled"]),
            metrics=dict(d["metrics"]),
            tokens=int(d["tokens"]),
            cursor_before=dict(d["cursor_before"]),
        )


def collect_rollouts(
    stage: Stage,
    step: int,
    version: int,
    sampler: Sampler,
    scorer: BatchScorer,
    mixture: TaskMixture,
    tokenizer: Any,
) -> StepRollouts:
    """Step ``step``'s rollouts under ``stage``'s config, drawn by ``sampler`` (which holds
    the policy of step ``version``): groups scored, shaped, and filtered by dynamic sampling
    (keep groups whose rewards differ; refill up to ``rollout.max_rounds`` rounds)."""
    cfg = stage.cfg
    ro = cfg.rollout
    params = SamplingParams(ro.temperature, ro.top_p, ro.max_new_tokens)
    batch: rl.DynamicBatch[PromptGroup] = rl.DynamicBatch(
        ro.prompts_per_step, ro.max_rounds if ro.dynamic_sampling else 1
    )
    cursor_before = dict(mixture.state_dict()["cursor"])
    all_groups: list[PromptGroup] = []
    sampled: list[str] = []
    timing: dict[str, float] = defaultdict(float)
    while not batch.full and not batch.exhausted:
        examples = mixture.draw(batch.need, step, batch.rounds, weights=stage.weights)
        sampled += [ex.uid for ex in examples]
        prompt_ids = encode_prompts(tokenizer, examples)
        seeds = [derive_seed(cfg.seed, step, ex.uid) for ex in examples]
        t = time.monotonic()
        samples = sampler.generate(prompt_ids, ro.n, params, seeds)
        timing["time/generate_s"] += time.monotonic() - t
        t = time.monotonic()
        scores = scorer(examples, samples)
        timing["time/score_s"] += time.monotonic() - t
        groups = [
            PromptGroup(*g, version=version)
            for g in zip(examples, prompt_ids, samples, scores, strict=True)
        ]
        shape(groups, cfg.shaping, ro.max_new_tokens, step - stage.start)  # before filtering
        all_groups += groups
        if ro.dynamic_sampling:
            batch.add(groups, [g.train_rewards for g in groups])
        else:  # keep everything; all-equal groups then simply carry zero advantage
            batch.add(groups, [[float(i) for i in range(ro.n)] for _ in groups])
    metrics = {**timing, **rollout_metrics(all_groups, batch)}
    if ro.dynamic_sampling and batch.warning():
        metrics["filter/saturated"] = 1.0
    tokens = sum(len(s.token_ids) for g in all_groups for s in g.samples)
    metrics["perf/gen_tokens_per_s"] = tokens / max(metrics["time/generate_s"], 1e-9)
    return StepRollouts(step, version, batch.groups, sampled, metrics, tokens, cursor_before)


# --- checkpoint form of a kept group -----------------------------------------------------------


def _group_state(g: PromptGroup) -> dict[str, Any]:
    return {
        "uid": g.example.uid,
        "task": g.example.task,
        "prompt_ids": list(g.prompt_ids),
        "samples": [
            [list(s.token_ids), list(s.logprobs), s.text, s.finish_reason] for s in g.samples
        ],
        "scores": [[s.reward, s.reason, s.formatted] for s in g.scores],
        "shaped": g.shaped,
        "shaping": g.shaping,
        "version": g.version,
    }


def _group_from(d: dict[str, Any]) -> PromptGroup:
    return PromptGroup(
        Example(d["uid"], d["task"], (), ""),
        list(d["prompt_ids"]),
        [Sample(tuple(t), tuple(lp), text, fr) for t, lp, text, fr in d["samples"]],
        [Score(r, reason, formatted=f) for r, reason, f in d["scores"]],
        shaped=d["shaped"],
        shaping=dict(d["shaping"]),
        version=int(d["version"]),
    )
