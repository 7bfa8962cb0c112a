"""The training task mixture and its data cursor (no torch).

Each draw is a pure function of (seed, step, round) and the cursor: which tasks are drawn
comes from an RNG seeded by those numbers, and each task hands out its items in order
(finite tasks in a fresh seeded permutation per epoch). The cursor is the whole state, so
a checkpoint that stores it resumes with exactly the next examples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prorl.sampling.base import derive_seed
from prorl.tasks import Task
from prorl.types import Example


@dataclass(frozen=True)
class MixtureEntry:
    name: str
    weight: float
    task: Task


class TaskMixture:
    def __init__(self, entries: Sequence[MixtureEntry], seed: int) -> None:
        if not entries:
            raise ValueError("the task mixture is empty")
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"task listed twice in the mixture: {names}")
        self.entries = list(entries)
        self.seed = seed
        self.weights = [e.weight for e in self.entries]  # a stage may change them
        self.cursor: dict[str, int] = {e.name: 0 for e in entries}
        self._perms: dict[str, tuple[int, list[int]]] = {}  # task -> (epoch, order)

    def draw(
        self, count: int, step: int, round_: int = 0, weights: dict[str, float] | None = None
    ) -> list[Example]:
        """``count`` examples for generation round ``round_`` of step ``step``, from the mix
        ``weights`` (a stage's; default: the mix set last)."""
        rng = random.Random(derive_seed(self.seed, "mixture", step, round_))
        mix = self.weights if weights is None else self._weights_of(weights)
        picks = rng.choices(self.entries, weights=mix, k=count)
        return [self._next(e) for e in picks]

    def set_weights(self, weights: dict[str, float]) -> None:
        """A new mix (a training stage's): tasks left out get weight 0 and are not drawn,
        but keep their cursor for a later stage that brings them back."""
        self.weights = self._weights_of(weights)

    def _weights_of(self, weights: dict[str, float]) -> list[float]:
        unknown = set(weights) - set(self.cursor)
        if unknown:
            raise ValueError(f"tasks not in the mixture: {sorted(unknown)}")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("a task mix needs a task with a positive weight")
        return [weights.get(e.name, 0.0) for e in self.entries]

    def _next(self, entry: MixtureEntry) -> Example:
        i = self.cursor[entry.name]
        self.cursor[entry.name] = i + 1
        size = entry.task.size("train")
        if size is None:
            return entry.task.example(i, "train")
        if size == 0:
            raise ValueError(f"task {entry.name!r} has no training items")
        epoch, pos = divmod(i, size)
        cached = self._perms.get(entry.name)
        if cached is None or cached[0] != epoch:  # one epoch's permutation per task in memory
            order = list(range(size))
            random.Random(derive_seed(self.seed, entry.name, epoch)).shuffle(order)
            cached = self._perms[entry.name] = (epoch, order)
        return entry.task.example(cached[1][pos], "train")

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": dict(self.cursor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state["cursor"]) - set(self.cursor)
        if unknown:
            raise ValueError(f"checkpoint cursor names tasks not in this mixture: {unknown}")
        self.cursor.update(state["cursor"])
