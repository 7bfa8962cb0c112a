"""A learner process group of K processes: torch.distributed data parallelism over the RL
update.

Every rank runs the same loop (SPMD, as under ``torchrun``): rollouts and scores are made
once (split across ranks, or by rank 0's Ray workers) and shared with all ranks, so every
rank holds the same batch, takes the same decisions (filtering, resets, alarms) and steps
the same optimizer. Only the update's forward/backward work is split: each mini-batch's
sequences are cut into K contiguous shards, one per rank, and DDP sums their gradients.
Since each micro-batch's loss is normalised by the token (or sequence) count of the whole
mini-batch, the summed gradient equals the single-process one up to float rounding.

Rank 0 alone writes the run directory (metrics, events, checkpoints, validation results);
the other ranks write a scratch directory that is deleted at exit. Rank 0 alone reads it
too: checkpoints are read on rank 0 and their tensors broadcast (``on_rank0``,
``broadcast_module``, ``load_optimizer_state``), so ranks > 0 need not see it at all.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from prorl.scale.base import TrainedModels

T = TypeVar("T")


def env_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group(
    rank: int,
    world: int,
    init_method: str = "env://",
    device: torch.device | None = None,
    timeout_s: float = 600,
) -> bool:
    """Join the learner process group: gloo on CPU, NCCL when the learner computes on GPUs
    (every rank resolves the same kind of device: ``prorl.device``). False when this process
    was already in a process group, which must then be the learner's itself."""
    if dist.is_initialized():
        if dist.get_world_size() != world:  # e.g. an in-process engine's private group
            raise RuntimeError(
                f"torch.distributed is already initialised with {dist.get_world_size()} "
                f"ranks in this process; the learner process group needs {world}"
            )
        return False
    backend = group_backend(device)
    if backend == "nccl":
        torch.cuda.set_device(device)  # NCCL's collectives and object lists use this GPU
    dist.init_process_group(
        backend,
        init_method=init_method,
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return True


def group_backend(device: torch.device | None) -> str:
    return "nccl" if device is not None and device.type == "cuda" else "gloo"


def close_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class DataParallel:
    """The ``Learner`` (``prorl.scale.base``) of a DDP process group: the hooks the update
    (``prorl.update``) and the checkpoint call when K > 1 ranks train.

    ``model`` wraps the policy in DDP, built on first use so that it sees the restored
    weights of a resumed run (DDP also broadcasts rank 0's parameters when built). FSDP2's
    hooks (``prorl.scale.fsdp.FullyShardedLearner``) override ``model``, ``sync`` and
    ``full_state``."""

    def __init__(self, policy: Any) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.policy = policy
        self._model: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def model(self) -> Any:
        if self._model is None:
            from torch.nn.parallel import DistributedDataParallel as DDP

            from prorl.policy import policy_device

            device = policy_device(self.policy)
            # buffers (rotary tables) are identical on every rank: no per-step broadcast
            self._model = DDP(
                self.policy,
                device_ids=[device] if device.type == "cuda" else None,
                forward_sync_buffers=False,
            )
        return self._model

    def shard(self, ids: Sequence[int], micro_batch_size: int) -> list[tuple[list[int], float]]:
        return shard_micro_batches(ids, micro_batch_size, self.rank, self.world)

    def sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Gradients are reduced on the last micro-batch of a mini-batch only."""
        if last:
            return contextlib.nullcontext()
        return self.model.no_sync()  # type: ignore[no-any-return]

    def full_state(self, state: TrainedModels) -> dict[str, Any] | None:
        """Whole weights gathered for a checkpoint: DDP ranks already hold them."""
        return None

    def gather_stats(self, stats: dict[str, list[float]]) -> dict[str, list[float]]:
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, dict(stats))
        merged: dict[str, list[float]] = defaultdict(list)
        for part in everyone:
            for k, v in part.items():
                merged[k].extend(v)
        return merged

    def barrier(self) -> None:
        dist.barrier()


def shard_micro_batches(
    ids: Sequence[int], micro_batch_size: int, rank: int, world: int
) -> list[tuple[list[int], float]]:
    """Rank ``rank``'s micro-batches of one mini-batch ``ids``, each with a loss weight.

    Rank r takes the r-th of ``world`` contiguous, near-equal slices of ``ids``. DDP needs
    the same number of backward passes on every rank, so a rank with fewer micro-batches
    (or none) repeats one of the mini-batch's sequences with weight 0: its gradient is zero
    and its statistics are dropped."""
    ids = list(ids)
    bounds = [len(ids) * r // world for r in range(world + 1)]
    mine = ids[bounds[rank] : bounds[rank + 1]]
    most = max(-(-(bounds[r + 1] - bounds[r]) // micro_batch_size) for r in range(world))
    out = [(mine[i : i + micro_batch_size], 1.0) for i in range(0, len(mine), micro_batch_size)]
    while len(out) < most:
        out.append(([ids[0]], 0.0))
    return out


def broadcast(value: Any, src: int = 0) -> Any:
    """``value`` from rank ``src`` (any picklable object) on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def in_group() -> bool:
    """Whether this process is one rank of a learner process group of several processes."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def on_rank0(fn: Callable[[], T], share: bool = False) -> T | None:
    """``fn()`` (e.g. reading a checkpoint) on rank 0 alone when a learner process group
    runs, and ``fn()`` in one process. Collective: every rank calls it at the same point of
    the loop. Ranks > 0 get rank 0's value with ``share`` (a small, picklable one), else None.

    A failure on rank 0 (a missing or torn file, a state that does not fit the model)
    raises on every rank instead of leaving the others waiting in the next collective for
    rank 0's tensors: a ConfigError as a ConfigError with rank 0's message (exit code 2 on
    every rank of a torchrun launch), anything else as a RuntimeError naming it."""
    if not in_group():
        return fn()
    if dist.get_rank() != 0:
        error, value = broadcast(None)
        if error is not None:
            kind, text = error
            if kind == "config":
                from prorl.config import ConfigError

                raise ConfigError(text)
            raise RuntimeError(f"rank 0 could not read the checkpoint: {text}")
        return value  # type: ignore[no-any-return]
    try:
        value = fn()
    except BaseException as e:
        from prorl.config import ConfigError

        kind = "config" if isinstance(e, ConfigError) else "other"
        broadcast(((kind, str(e) if kind == "config" else f"{type(e).__name__}: {e}"), None))
        raise
    broadcast((None, value if share else None))
    return value


def broadcast_tensors(tensors: Iterable[torch.Tensor], dedupe: bool = True) -> None:
    """Overwrite ``tensors`` in place with rank 0's, one tensor at a time (collective: every
    rank passes tensors of the same shapes and dtypes in the same order, on the device its
    backend uses: CPU for gloo, its GPU for NCCL). ``dedupe``: a tensor sharing memory with
    an earlier one (a head tied to the embedding: tied alike on every rank) is sent once."""
    seen: set[int] = set()
    for t in tensors:
        if t.numel() == 0 or (dedupe and t.data_ptr() in seen):
            continue
        seen.add(t.data_ptr())
        if t.is_contiguous():
            dist.broadcast(t, src=0)
        else:  # the collective needs one dense buffer
            buf = t.contiguous()
            dist.broadcast(buf, src=0)
            t.copy_(buf)


@torch.no_grad()
def broadcast_module(model: Any) -> None:
    """Every rank's ``model`` takes rank 0's weights and buffers, in place (collective; the
    same architecture on every rank): ``model.state_dict()``'s tensors share the module's
    memory, so receiving into them loads them, with no second copy on any rank."""
    broadcast_tensors(model.state_dict().values())


def load_optimizer_state(optimizer: Any, state: dict[str, Any] | None) -> None:
    """``optimizer.load_state_dict(state)`` on every rank of a (DDP) learner process group
    from the ``state`` rank 0 read (None on ranks > 0; collective).

    Rank 0 loads it (a state that does not fit raises on every rank), then sends its layout:
    the hyperparameters, 0-dim tensors (AdamW's ``step``) as values, and the shape and dtype
    of every other tensor (the moments): a small object. Then each moment goes on its own;
    ranks > 0 allocate it where its parameter lives, receive it in place and load the
    result. Broadcasting the whole state as one object would pickle it on rank 0 and leave
    every other rank holding the pickled bytes besides the unpickled copy (twice the
    moments, twice the parameters' size each, per rank); this way a rank > 0 holds exactly
    the state it keeps, and NCCL moves GPU moments without a trip through host memory."""
    on_rank0(lambda: optimizer.load_state_dict(state))
    mine = optimizer.state_dict() if dist.get_rank() == 0 else None  # the live tensors
    layout = broadcast(_layout(mine) if mine is not None else None)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    full = mine or {
        "param_groups": layout["param_groups"],
        "state": {
            i: {k: _allocate(v, params[i].device) for k, v in entries.items()}
            for i, entries in layout["state"].items()
        },
    }
    order = [
        (i, k)
        for i, entries in layout["state"].items()
        for k, v in entries.items()
        if isinstance(v, _Meta)
    ]
    broadcast_tensors((full["state"][i][k] for i, k in order), dedupe=False)
    if mine is None:
        optimizer.load_state_dict(full)


class _Meta(tuple[tuple[int, ...], torch.dtype]):
    """The shape and dtype of a tensor sent separately."""


def _allocate(v: Any, device: torch.device) -> Any:
    return torch.empty(v[0], dtype=v[1], device=device) if isinstance(v, _Meta) else v


def _layout(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict without its large tensors: (shape, dtype) in their place."""

    def slot(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return _Meta((tuple(v.shape), v.dtype))
        return v.cpu() if isinstance(v, torch.Tensor) else v

    return {
        "param_groups": state["param_groups"],
        "state": {i: {k: slot(v) for k, v in s.items()} for i, s in state["state"].items()},
    }
