"""The training state: everything a step reads and updates, and its save and restore.

``prorl.checkpoint`` knows the files (layout, atomic writes, pruning); this module knows what
goes into them and how a learner group of several processes loads them together.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prorl.checkpoint import (
    CheckpointSaveError,
    checkpoint_dirs,
    load_trainer,
    prune,
    read_hf_weights,
    read_reference,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_name,
    step_of,
)
from prorl.collect import StepRollouts
from prorl.config import Config, to_dict
from prorl.health import HealthMonitor
from prorl.mixture import TaskMixture
from prorl.producer import RolloutProducer
from prorl.resets import ResetPolicy
from prorl.sampling.base import Sampler
from prorl.scale.base import Learner
from prorl.scale.fsdp import is_sharded, load_full_model_state, load_optimizer_state
from prorl.scale.learner import broadcast, broadcast_module, in_group, on_rank0
from prorl.stages import Schedule, Stage
from prorl.types import BatchScorer


@dataclass
class TrainState:
    """Everything a step reads and updates (and a checkpoint stores).

    ``cfg`` is the run's config, stages included; the config in force for the next step is
    ``stage.cfg`` (``prorl.stages``), found from ``step``."""

    cfg: Config
    policy: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    ref: PreTrainedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: Sampler
    scorer: BatchScorer
    mixture: TaskMixture
    step: int = 0
    resets: list[dict[str, Any]] = field(default_factory=list)
    sampled: list[str] = field(default_factory=list)  # uids drawn in the last step
    sampled_version: int = 0  # the policy that drew them (its update count)
    stop_requested: bool = False  # set by the first SIGINT/SIGTERM: save and stop
    resetter: ResetPolicy = field(init=False)
    health: HealthMonitor = field(init=False)
    learner: Learner | None = None  # several torch.distributed processes train together
    producer: RolloutProducer | None = None  # draws steps ahead (rollout.max_staleness > 0)
    # steps drawn ahead that a checkpoint carried, and the lag they were drawn with
    inflight: list[StepRollouts] = field(default_factory=list)
    inflight_lag: int = 0
    _schedule: Schedule | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.resetter = ResetPolicy(self.cfg.reset, self.cfg.algo.kl_coef)
        self.health = HealthMonitor(self.cfg.health.checks)

    @property
    def schedule(self) -> Schedule:
        if self._schedule is None or self._schedule.cfg is not self.cfg:
            self._schedule = Schedule(self.cfg)
        return self._schedule

    @property
    def stage(self) -> Stage:
        """The stage that runs the next step, with the config in force."""
        return self.schedule.stage(self.step)


def make_optimizer(
    cfg: Config, policy: torch.nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters with ``optim.*``, and its linear warm-up."""
    o = cfg.optim
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay
    )
    warmup = max(1, o.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if o.warmup_steps else 1.0
    )
    return optimizer, scheduler


M = TypeVar("M", bound=torch.nn.Module)


def frozen_copy(model: M) -> M:
    """A copy in eval mode with no gradients: the KL reference."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --- loading weights, also in a learner group -------------------------------------------------


def load_weights(model: torch.nn.Module, folder: Path) -> None:
    """Copy the weights of an HF folder into an already built model (same architecture).

    In a learner group: collective; rank 0 alone reads the folder (see ``_load_full``)."""
    dtype = next(model.parameters()).dtype
    _load_full(model, lambda: read_hf_weights(folder, dtype))


def load_reference(ref: torch.nn.Module, ckpt: Path) -> None:
    _load_full(ref, lambda: read_reference(ckpt))


def _load_full(model: torch.nn.Module, read: Callable[[], dict[str, Any]]) -> None:
    """``model.load_state_dict(read())``. In a learner group (collective: every rank loads
    the same checkpoint) only rank 0 calls ``read``, so ranks > 0 need not see the run
    directory: an FSDP2-sharded model gets its shards scattered from rank 0 one tensor at a
    time (a node's ranks hold one whole copy between them, not one each); a DDP rank 0
    loads its model and broadcasts each tensor into the others' in place."""
    if is_sharded(model):
        load_full_model_state(model, on_rank0(read))
        return
    on_rank0(lambda: model.load_state_dict(read()))  # a state that does not fit: raises
    if in_group():
        broadcast_module(model)


def kept_checkpoint(run_dir: Path, step: int) -> Path | None:
    """The complete checkpoint of ``step`` if the run kept it. In a learner group rank 0
    looks and every rank gets its answer (collective), so the ranks cannot disagree."""

    def look() -> Path | None:
        found = [d for d in checkpoint_dirs(run_dir) if step_of(d) == step]
        return found[0] if found else None

    return on_rank0(look, share=True)  # type: ignore[no-any-return]


# --- a training state <-> a checkpoint ------------------------------------------------------


def trainer_state(state: TrainState) -> dict[str, Any]:
    """Everything besides the weights that a resumed run needs to continue exactly. The
    steps drawn ahead are finished first, so the mixture's cursor is the one after them."""
    ahead = state.producer.drain() if state.producer is not None else []
    return {
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "mixture": state.mixture.state_dict(),
        "rng": rng_state(),
        "resets": state.resets,
        "resetter": state.resetter.state_dict(),
        "health": state.health.state_dict(),
        "inflight": [r.to_state() for r in ahead],
        "inflight_lag": state.cfg.rollout.max_staleness if ahead else 0,
    }


def restore_state(state: TrainState, folder: Path) -> None:
    """Load checkpoint ``folder`` into a freshly built ``state`` (same config).

    In a learner group (DDP or FSDP2; collective) rank 0 alone reads the files: it sends
    the weights and AdamW's moments tensor by tensor (scattered to shards under FSDP2), and
    the rest of ``trainer.pt`` (scheduler, data cursor, RNG states, ...: small) as one
    broadcast object. Every rank ends with rank 0's state; ranks > 0 read nothing."""
    load_weights(state.policy, folder / "policy")
    if state.ref is not None:
        load_reference(state.ref, folder)
    saved = on_rank0(lambda: load_trainer(folder))
    optimizer = saved.pop("optimizer") if saved is not None else None
    if in_group():
        saved = broadcast(saved)  # rank 0's, without the optimizer's tensors
    assert saved is not None
    load_optimizer_state(state.policy, state.optimizer, optimizer)
    state.scheduler.load_state_dict(saved["scheduler"])
    state.mixture.load_state_dict(saved["mixture"])
    state.resets = list(saved["resets"])
    if saved.get("resetter"):
        state.resetter.load_state_dict(saved["resetter"])
    if saved.get("health"):
        state.health.load_state_dict(saved["health"])
    state.inflight = [StepRollouts.from_state(d) for d in saved.get("inflight", [])]
    state.inflight_lag = int(saved.get("inflight_lag", 0))
    state.step = int(saved["step"])
    set_rng_state(saved["rng"])  # last: nothing above may draw from the RNGs


def save_state(state: TrainState, run_dir: Path) -> Path:
    """Write a checkpoint of ``state`` and prune old ones; a failure raises
    CheckpointSaveError and leaves the previous checkpoints as they were."""
    c = state.cfg.checkpoint
    learner = state.learner
    # FSDP2: every rank takes part in gathering the whole weights; rank 0 gets them
    full = learner.full_state(state) if learner is not None else None
    if learner is not None and not learner.is_main:  # rank 0 writes it
        learner.barrier()
        return run_dir / "checkpoints" / step_name(state.step)
    trainer = {**trainer_state(state), **(full or {}).get("trainer", {})}
    try:
        folder = save_checkpoint(
            run_dir,
            state.step,
            state.policy,
            state.tokenizer,
            state.ref,
            trainer,
            to_dict(state.cfg),
            full=full,
        )
    except OSError as e:
        raise CheckpointSaveError(
            f"saving the checkpoint of step {state.step} failed: {e}; "
            "the previous checkpoints are intact"
        ) from e
    prune(run_dir, c.keep_last, c.milestones_every)
    if learner is not None:  # the group leaves the save together (ranks > 0 wait above)
        learner.barrier()
    return folder
