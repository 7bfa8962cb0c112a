"""How a rollout batch is cut into optimizer steps and micro-batches (pure, no torch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


def plan_minibatches(n_seqs: int, mini_batches: int) -> list[list[int]]:
    """Sequence indices 0..n_seqs-1 cut into exactly ``mini_batches`` contiguous runs whose
    sizes differ by at most one (fewer when there are fewer sequences than that): one
    optimizer step each, so ``algo.mini_batches`` means what it says whatever dynamic
    sampling kept."""
    if mini_batches < 1:
        raise ValueError(f"mini_batches must be >= 1, got {mini_batches}")
    count = min(mini_batches, n_seqs)
    base, extra = divmod(n_seqs, count) if count else (0, 0)
    plan, start = [], 0
    for i in range(count):
        size = base + (i < extra)
        plan.append(list(range(start, start + size)))
        start += size
    return plan


@dataclass(frozen=True)
class MicroBatch:
    """One forward/backward pass: sequence indices and a loss weight (0: a padding pass
    that a learner rank with fewer sequences makes so every rank runs as many backwards)."""

    ids: list[int]
    weight: float = 1.0


@dataclass(frozen=True)
class MiniBatch:
    """One optimizer step: every sequence of it (on all ranks; the loss is normalised by
    their count) and this process's micro-batches."""

    ids: list[int]
    micro: list[MicroBatch]


# (mini-batch sequence ids, micro-batch size) -> this rank's (ids, weight) micro-batches
Sharder = Callable[[Sequence[int], int], list[tuple[list[int], float]]]


def micro_batches(ids: Sequence[int], size: int) -> list[tuple[list[int], float]]:
    """One process's micro-batches of a mini-batch: contiguous runs of ``size``."""
    ids = list(ids)
    return [(ids[i : i + size], 1.0) for i in range(0, len(ids), size)]


def plan_update(
    n_seqs: int, mini_batches: int, micro_batch_size: int, shard: Sharder | None = None
) -> list[MiniBatch]:
    """The whole update's plan: ``plan_minibatches`` optimizer steps, each cut into
    micro-batches of at most ``micro_batch_size`` sequences; ``shard`` (a learner group's,
    e.g. ``scale.learner.shard_micro_batches`` bound to a rank) gives this rank's part."""
    cut = shard or micro_batches
    return [
        MiniBatch(ids, [MicroBatch(m, w) for m, w in cut(ids, micro_batch_size)])
        for ids in plan_minibatches(n_seqs, mini_batches)
    ]
