"""Asynchronous rollouts wired into a training run: the rollout thread (``prorl.producer``)
started with its own sampler or the run's, the policy snapshots it receives, and validation
beside it."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch

from prorl.collect import StepRollouts, collect_rollouts
from prorl.producer import RolloutProducer
from prorl.sampling.factory import make_sampler
from prorl.sampling.hf import HFSampler
from prorl.state import TrainState

Validate = Callable[[TrainState], dict[str, float]]  # prorl.runtime.make_validate


def policy_snapshot(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the policy's weights that later updates do not touch."""
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


def sampling_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """A copy of the policy for the rollout thread. Its parameters keep ``requires_grad``
    (never used: it draws under ``no_grad``), because on CPU that flag changes which matmul
    kernel runs (log-probs differ by ~5e-7, measured): so a copy draws bit for bit what the
    policy itself would."""
    model = copy.deepcopy(policy)
    for p in model.parameters():
        p.grad = None
    return model


def validate_now(state: TrainState, validate: Validate) -> dict[str, float]:
    """Validate the current policy. A rollout thread that shares the sampler (vLLM, Ray
    actors: they hold their own copy of the weights) waits between two jobs meanwhile,
    while the sampler holds the current policy."""
    producer = state.producer
    if producer is None or not shares_sampler(state):
        return validate(state)
    with producer.exclusive():
        state.sampler.update_weights(state.policy)
        return validate(state)


def shares_sampler(state: TrainState) -> bool:
    """Whether the rollout thread draws with ``state.sampler`` (which then holds its own
    weights); else (HF generation, which shares the policy module) it has its own."""
    return not isinstance(state.sampler, HFSampler)


@contextlib.contextmanager
def rollouts_ahead(state: TrainState) -> Iterator[None]:
    """With ``rollout.max_staleness`` > 0: the rollout thread (``prorl.producer``), started
    at the current step with the policy's weights and the steps a checkpoint carried,
    closed at the end. A checkpoint drawn with another lag is drawn again."""
    lag = state.cfg.rollout.max_staleness
    restored, state.inflight = state.inflight, []
    if restored and state.inflight_lag != lag:  # same prompts, from the resumed policy
        state.mixture.load_state_dict({"cursor": restored[0].cursor_before})
        restored = []
    if lag == 0:
        yield
        return
    tokenizer = copy.deepcopy(state.tokenizer)  # a fast tokenizer is not shared across threads
    model = sampling_copy(state.policy)  # the weights the thread draws with
    # HF generation gets its own sampler over the copy: the trainer changes the policy
    sampler = state.sampler if shares_sampler(state) else make_sampler(state.cfg, model, tokenizer)

    def collect(step: int, version: int) -> StepRollouts:
        stage = state.schedule.stage(step)
        return collect_rollouts(
            stage, step, version, sampler, state.scorer, state.mixture, tokenizer
        )

    def load(weights: dict[str, Any]) -> None:
        model.load_state_dict(weights)
        sampler.update_weights(model)

    producer = RolloutProducer(collect, load, lag, state.mixture, state.cfg.steps)
    producer.start(state.step, policy_snapshot(state.policy), restored)
    state.producer = producer
    try:
        yield
    except BaseException as e:  # a second Ctrl-C stops at once: no wait for the running job
        state.producer = None
        producer.close(wait=not isinstance(e, KeyboardInterrupt))
        raise
    state.producer = None
    producer.close()
