"""Dynamic sampling (DAPO): keep only groups whose rewards differ, refill up to a cap.

A group whose rewards are all equal (every sample right, or every sample wrong) has zero
advantage under every estimator, so it adds tokens to the batch and nothing to the gradient.
Pure Python: no torch needed to decide what to keep (a tensor is accepted as input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _as_floats(values: Any) -> list[float]:
    if hasattr(values, "tolist"):  # torch tensor or numpy array
        values = values.tolist()
    return [float(v) for v in values]


def is_informative(rewards: Sequence[float], tol: float = 1e-9) -> bool:
    """True when the rewards of one group are not all equal (max - min > tol)."""
    vals = _as_floats(rewards)
    return len(vals) > 1 and max(vals) - min(vals) > tol


def informative_groups(rewards: Any, group_size: int, tol: float = 1e-9) -> list[int]:
    """Indices of the groups in flat, group-contiguous ``rewards`` whose rewards differ.

    ``rewards`` is a sequence of floats or a 1-D tensor of length ``G * group_size``.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    vals = _as_floats(rewards)
    if len(vals) % group_size != 0:
        raise ValueError(
            f"rewards has {len(vals)} entries, not a multiple of group_size={group_size}"
        )
    return [
        g
        for g in range(len(vals) // group_size)
        if is_informative(vals[g * group_size : (g + 1) * group_size], tol)
    ]


class DynamicBatch(Generic[T]):
    """Accumulates informative groups over generation rounds until ``target_groups`` are kept.

    Usage::

        batch = DynamicBatch(target_groups=8, max_rounds=4)
        while not batch.full and not batch.exhausted:
            groups = generate(batch.need)            # caller's rollouts, one item per prompt
            batch.add(groups, [g.rewards for g in groups])
        if (msg := batch.warning()):
            log.warning(msg)                         # saturated: train on fewer groups
        train_on(batch.groups)                       # may be empty: skip the update then

    Groups are kept in arrival order; informative groups beyond the target are dropped (the
    first ones win, so the result is deterministic) and counted in ``overflow``. Never raises
    when the data saturates: ``warning()`` says so and the caller decides.
    """

    def __init__(self, target_groups: int, max_rounds: int, tol: float = 1e-9) -> None:
        if target_groups < 1:
            raise ValueError(f"target_groups must be >= 1, got {target_groups}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        self.target_groups = target_groups
        self.max_rounds = max_rounds
        self.tol = tol
        self.rounds = 0
        self.seen = 0  # groups offered to add()
        self.dropped = 0  # groups with all-equal rewards
        self.overflow = 0  # informative groups beyond the target
        self._kept: list[T] = []

    def add(self, groups: Sequence[T], rewards_per_group: Sequence[Sequence[float]]) -> None:
        """Offer one round of groups; keeps the informative ones while there is room."""
        if len(groups) != len(rewards_per_group):
            raise ValueError(f"got {len(groups)} groups but {len(rewards_per_group)} reward lists")
        self.rounds += 1
        for group, rewards in zip(groups, rewards_per_group, strict=True):
            self.seen += 1
            if not is_informative(rewards, self.tol):
                self.dropped += 1
            elif len(self._kept) < self.target_groups:
                self._kept.append(group)
            else:
                self.overflow += 1

    @property
    def groups(self) -> list[T]:
        """The kept groups (at most ``target_groups``), in arrival order; a copy."""
        return list(self._kept)

    @property
    def need(self) -> int:
        """How many more informative groups would fill the batch."""
        return self.target_groups - len(self._kept)

    @property
    def full(self) -> bool:
        return self.need == 0

    @property
    def exhausted(self) -> bool:
        """No generation rounds left (``rounds >= max_rounds``)."""
        return self.rounds >= self.max_rounds

    @property
    def kept_frac(self) -> float:
        """Share of offered groups that were informative (BroRL's "survive" rate)."""
        return (self.seen - self.dropped) / self.seen if self.seen else 0.0

    def warning(self) -> str | None:
        """A message when the rounds ran out before the batch filled, else None."""
        if self.full or not self.exhausted:
            return None
        kept = len(self._kept)
        action = "skipping this update" if kept == 0 else "training on a smaller batch"
        return (
            f"dynamic sampling saturated: {kept}/{self.target_groups} informative groups after "
            f"{self.rounds} generation round(s) ({self.seen} groups seen, {self.dropped} with "
            f"all-equal rewards); {action}. Raise max_rounds or add harder/easier prompts."
        )

    def metrics(self) -> dict[str, float]:
        """Flat ``filter/*`` metrics for the step's log."""
        return {
            "filter/kept_frac": self.kept_frac,
            "filter/groups": float(len(self._kept)),
            "filter/seen": float(self.seen),
            "filter/dropped": float(self.dropped),
            "filter/overflow": float(self.overflow),
            "filter/rounds": float(self.rounds),
        }
