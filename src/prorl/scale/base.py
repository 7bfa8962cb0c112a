"""What the training loop sees of scaling out: the ``Learner`` hooks and the errors that
stop a scaled-out run. A leaf module (torch only): ``prorl.state`` and the update import it
without importing the learner process group's, FSDP2's or Ray's code."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import torch


class LearnerFailed(RuntimeError):
    """A learner rank died or a collective failed: the run stopped; resume from the newest
    complete checkpoint."""


class WorkerStartError(RuntimeError):
    """A Ray actor failed in its constructor (a bad engine setting, a missing package, no
    memory): replacing it would fail the same way, so the run stops with its error."""


class TrainedModels(Protocol):
    """What ``Learner.full_state`` gathers for a checkpoint (a ``TrainState``)."""

    @property
    def policy(self) -> torch.nn.Module: ...

    @property
    def ref(self) -> torch.nn.Module | None: ...

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...


class Learner(Protocol):
    """This process's rank of a learner process group of several processes, as the update
    and the checkpoint use it (``TrainState.learner``; None when one process trains):
    ``prorl.scale.learner.DataParallel`` (DDP) or ``prorl.scale.fsdp.FullyShardedLearner``.
    Every method but ``shard`` and ``is_main`` is collective: every rank calls it at the same
    point of the loop."""

    @property
    def rank(self) -> int: ...

    @property
    def world(self) -> int:
        """The number of ranks."""
        ...

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory."""
        ...

    @property
    def model(self) -> torch.nn.Module:
        """What the update runs forward and backward (DDP's wrapper, or the sharded policy)."""
        ...

    def shard(self, ids: Sequence[int], micro_batch_size: int) -> list[tuple[list[int], float]]:
        """This rank's micro-batches of the mini-batch ``ids``, each with its loss weight."""
        ...

    def sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Around one micro-batch's backward: gradients are reduced when ``last``."""
        ...

    def gather_stats(self, stats: dict[str, list[float]]) -> dict[str, list[float]]:
        """Every rank's statistics of the update, merged."""
        ...

    def full_state(self, state: TrainedModels) -> dict[str, Any] | None:
        """Whole weights gathered for a checkpoint (rank 0 gets them; the other ranks, and
        DDP, whose ranks hold whole weights already, None)."""
        ...

    def barrier(self) -> None: ...
