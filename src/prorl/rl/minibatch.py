"""How a rollout batch is cut into optimizer steps (pure, no torch)."""

from __future__ import annotations


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
