"""The sampler and the scorer seen from every rank of a learner process group: the same
samples and scores on every rank, so every rank holds the same batch and takes the same
decisions (``prorl.scale.learner``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.distributed as dist

from prorl.sampling.base import per_prompt_seeds
from prorl.scale.fsdp import full_model_state, is_sharded
from prorl.scale.learner import broadcast
from prorl.types import Example, Sample, Score


class CollectiveSampler:
    """A Sampler for every rank of a learner process group: all ranks get the same samples.

    ``split``: each rank generates its share of the prompts (prompt i on rank i mod K) with
    its own sampler and the ranks exchange results (torchrun on one node). Otherwise rank 0's
    sampler (e.g. a RaySampler) generates everything and broadcasts it; the other ranks pass
    ``inner=None``. Samples are per-prompt seeded, so either way they equal one process's."""

    def __init__(self, inner: Any, split: bool) -> None:
        self.inner = inner
        self.split = split
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, params: Any, seed: int | Sequence[int]
    ) -> list[list[Sample]]:
        seeds = per_prompt_seeds(seed, len(prompts))
        if not self.split:
            out = self.inner.generate(prompts, n, params, seeds) if self.rank == 0 else None
            return broadcast(out)  # type: ignore[no-any-return]
        mine = list(range(self.rank, len(prompts), self.world))
        part = (
            self.inner.generate([prompts[i] for i in mine], n, params, [seeds[i] for i in mine])
            if mine
            else []
        )
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, part)
        result: list[list[Sample]] = [[] for _ in prompts]
        for r, got in enumerate(everyone):
            for i, group in zip(range(r, len(prompts), self.world), got, strict=True):
                result[i] = group
        return result

    def update_weights(self, model: Any) -> None:
        if is_sharded(model):  # FSDP2: every rank gathers; rank 0's rollout actors load it
            weights = full_model_state(model)
            if self.inner is not None:
                self.inner.load_state_dict(weights)
        elif self.inner is not None:
            self.inner.update_weights(model)


class CollectiveScorer:
    """Rank 0 scores (its verifier pool or Ray pool); every rank gets the same scores, so a
    timeout on one machine cannot make the ranks' batches differ."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.rank = dist.get_rank()

    def __call__(self, examples: list[Example], samples: list[list[Sample]]) -> list[list[Score]]:
        out = self.inner(examples, samples) if self.rank == 0 else None
        return broadcast(out)  # type: ignore[no-any-return]

    def for_eval(self, task: Any, example: Example, texts: Sequence[str]) -> list[Score]:
        out = self.inner.for_eval(task, example, texts) if self.rank == 0 else None
        return broadcast(out)  # type: ignore[no-any-return]
