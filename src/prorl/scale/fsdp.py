"""FSDP2 for the learner process group: the policy and the reference sharded across the
ranks.

``torch.distributed.fsdp.fully_shard`` is applied to every decoder layer, then to the root
module, in place: parameters become DTensors holding this rank's dim-0 shard, and each
forward all-gathers a layer's weights just before it runs. The reference is sharded the
same way (every rank runs the same number of reference forwards, and it is as large as the
policy). AdamW is built on the sharded parameters, so its moments are sharded too.

Whatever reads or writes *whole* weights must gather or scatter them collectively, on every
rank at the same point of the loop: checkpoint save and load, a reset of the reference to a
kept checkpoint, and weight shipping to the rollout actors. The helpers here do that through
``torch.distributed.checkpoint.state_dict`` and keep every checkpoint in the plain formats a
single process writes (an HF folder, a state dict, ``optimizer.state_dict()``), so a run can
resume with any number of ranks and either strategy. Gathers land on rank 0; loads are read
by rank 0 alone and scattered from it tensor by tensor (``prorl.scale.learner.on_rank0``),
so no rank but 0 ever holds a whole copy. A policy -> reference reset needs no gather: both
are sharded alike, so each rank copies its own shards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from prorl.scale.base import TrainedModels
from prorl.scale.learner import DataParallel


def is_sharded(model: Any) -> bool:
    """Whether ``fully_shard`` sharded ``model`` (a plain or DDP model: no)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: Any) -> list[Any]:
    """The model's repeated blocks: the classes HF names in ``_no_split_modules``."""
    from prorl.config import ConfigError

    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:  # a config the model cannot run: exit code 2 in the CLI
        raise ConfigError(
            f"scale.learner_strategy=fsdp2: cannot find the decoder layers of "
            f"{type(model).__name__} (no _no_split_modules); use scale.learner_strategy=ddp"
        )
    return layers


def shard_model(model: Any, frozen: bool = False) -> None:
    """``fully_shard`` each decoder layer, then the root (embeddings, final norm, head).

    FSDP2 keeps the root's parameters gathered after a forward by default (a backward
    needs them next); a ``frozen`` model (the reference) never runs one, so its root
    reshards at once instead of holding a whole embedding and head on every rank."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model, reshard_after_forward=True if frozen else None)


def reshard(model: Any) -> None:
    """Every FSDP2 group of ``model`` back to its shards (a root may still hold gathered
    parameters after a forward without backward); before whole states are read or loaded."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def _options(everyone: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # cpu_offload: the full tensors land in CPU memory, and only on rank 0
    return StateDictOptions(full_state_dict=True, cpu_offload=not everyone)


def full_model_state(model: Any, everyone: bool = False) -> dict[str, Any]:
    """The whole state dict of a sharded ``model`` (collective: every rank calls it).

    On rank 0 only (``everyone``: on every rank); the other ranks get ``{}``."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    reshard(model)
    state = get_model_state_dict(model, options=_options(everyone))
    return retie(model, state) if state else state


def retie(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Tied parameters (a head sharing the embedding) share one gathered tensor again, as
    in ``model.state_dict()``: HF's ``save_pretrained`` then stores it once, as one process
    does, instead of writing the head as a separate weight."""
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in first:
            first[id(p)] = name
        elif name in state and first[id(p)] in state:
            state[name] = state[first[id(p)]]
    return state


def _from_rank0() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # rank 0 passes the whole state and sends it one tensor at a time (torch's
    # _broadcast_state_dict: names, shapes and small values first, as one object); each
    # rank copies its slice of the tensor into its shard and drops it, so a rank > 0 never
    # holds more than one whole tensor. Works on gloo (CPU) and NCCL alike.
    return StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


def load_full_model_state(model: Any, state: dict[str, Any] | None) -> None:
    """Load a whole state dict into a sharded ``model`` (collective): rank 0 passes it
    and scatters it, the other ranks pass None (or anything: it is ignored) and keep
    their shards of rank 0's (see ``prorl.scale.learner.on_rank0``)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    reshard(model)  # else gathered parameters meet DTensor shards: "mixed Tensor and DTensor"
    # a copy: it replaces the dict's values with this rank's DTensor shards
    mine = dict(state or {}) if dist.get_rank() == 0 else {}
    set_model_state_dict(model, mine, options=_from_rank0())


def full_optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """``optimizer.state_dict()`` as one process would have it (parameters numbered in
    order), gathered from the shards (collective; ``{}`` on ranks > 0)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    reshard(model)
    named = get_optimizer_state_dict(model, optimizer, options=_options(everyone=False))
    return to_indexed(named) if named else {}


def load_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any] | None) -> None:
    """``optimizer.load_state_dict(state)`` for a single-process ``state``; in a learner
    process group every rank takes rank 0's (``state`` None on the others; collective): a
    sharded model's ranks keep the shards of AdamW's moments of their parameters, DDP ranks
    a whole copy (``prorl.scale.learner.load_optimizer_state``)."""
    from prorl.scale import learner

    if not is_sharded(model):
        if learner.in_group():
            learner.load_optimizer_state(optimizer, state)
        else:
            optimizer.load_state_dict(state)
        return
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    from prorl.scale.learner import broadcast

    rank0 = dist.get_rank() == 0
    # the hyperparameters are small: every rank gets them, so every rank checks that the
    # state fits this model (raising together, none left waiting) and restores them as saved
    saved = broadcast(state["param_groups"] if rank0 and state is not None else None)
    reshard(model)  # the optimizer holds the sharded parameters: name those
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    to_named({"state": {}, "param_groups": saved}, groups)  # raises when it does not fit
    named = to_named(state, groups) if rank0 and state is not None else {}
    set_optimizer_state_dict(model, optimizer, named, options=_from_rank0())
    for group, kept in zip(optimizer.param_groups, saved, strict=True):
        # the hyperparameters as saved (the call above turns the betas tuple into a list)
        group.update({k: v for k, v in kept.items() if k != "params"})


def to_indexed(named: dict[str, Any]) -> dict[str, Any]:
    """A ``torch.distributed.checkpoint`` optimizer state dict (keyed by parameter name)
    in ``torch.optim.Optimizer.state_dict()``'s form: parameters numbered 0, 1, ... in the
    order of the param groups; a parameter without state (no gradient yet) has no entry."""
    index: dict[str, int] = {}
    groups = []
    for g in named["param_groups"]:
        ids = []
        for name in g["params"]:
            index.setdefault(name, len(index))
            ids.append(index[name])
        groups.append({**g, "params": ids})
    state = {index[k]: v for k, v in named["state"].items()}
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def to_named(indexed: dict[str, Any], names: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The inverse of ``to_indexed``: ``names[g]`` are the parameter names of group g in
    the optimizer's order. Raises when the counts differ (another model's state)."""
    groups = indexed["param_groups"]
    sizes = [len(g["params"]) for g in groups]
    if sizes != [len(n) for n in names]:
        raise ValueError(
            f"optimizer state for param groups of sizes {sizes} does not fit this model's "
            f"{[len(n) for n in names]}"
        )
    by_id = {
        i: n
        for g, ns in zip(groups, names, strict=True)
        for i, n in zip(g["params"], ns, strict=True)
    }
    return {
        "state": {by_id[i]: v for i, v in indexed["state"].items()},
        "param_groups": [{**g, "params": list(ns)} for g, ns in zip(groups, names, strict=True)],
    }


class FullyShardedLearner(DataParallel):
    """The ``Learner`` (``prorl.scale.base``) of an FSDP2 process group.

    ``model`` is the policy itself (sharded in place by ``shard_model``); micro-batches are
    split and padded as under DDP (every rank must run the same forwards and backwards, as
    each one all-gathers and reduce-scatters); FSDP2 averages the gradients over the ranks
    as DDP does, so the loss scaling is the same. ``torch.nn.utils.clip_grad_norm_`` needs
    nothing: on DTensor gradients its norm is reduced over every rank's shards."""

    @property
    def model(self) -> Any:
        return self.policy

    def sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        return self._sync(last)

    @contextlib.contextmanager
    def _sync(self, last: bool) -> Iterator[None]:
        # no reduce-scatter until the mini-batch's last backward: gradients accumulate
        # unsharded, as DDP's no_sync
        self.policy.set_requires_gradient_sync(last)
        try:
            yield
        finally:
            self.policy.set_requires_gradient_sync(True)

    def full_state(self, state: TrainedModels) -> dict[str, Any] | None:
        """The whole policy, reference and AdamW state for a checkpoint, gathered by every
        rank together; rank 0 gets them (in single-process form), the others None."""
        policy = full_model_state(state.policy)
        ref = full_model_state(state.ref) if state.ref is not None else None
        optimizer = full_optimizer_state(state.policy, state.optimizer)
        if not self.is_main:
            return None
        return {"policy": policy, "reference": ref, "trainer": {"optimizer": optimizer}}
