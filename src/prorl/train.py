"""The RL step and the training loop, top to bottom.

One step: draw prompts from the task mix -> generate n samples each -> score them in the
verifier pool -> shape the rewards (overlong rule, length penalty) -> drop groups whose
rewards are all equal, refilling from new prompts -> advantages -> mini-batch updates of the
clipped loss plus KL to the frozen reference (``prorl.update``) -> metrics. Scaling out swaps
the Sampler, the scorer or the learner, never this file.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prorl import rl
from prorl.ahead import Validate, policy_snapshot, rollouts_ahead, validate_now
from prorl.collect import collect_rollouts
from prorl.config import Config, to_dict
from prorl.display import Display
from prorl.metrics import MetricsWriter, WandbLogger, append_jsonl
from prorl.resets import ResetDecision
from prorl.rollouts import RolloutBatch
from prorl.stages import Stage
from prorl.stages import describe as st_describe
from prorl.state import (
    TrainState,
    kept_checkpoint,
    load_weights,
    make_optimizer,
    save_state,
)
from prorl.update import update_policy

SAMPLES = "samples.jsonl"  # per step: the uids of every example drawn (resume checks)


class TrainingStopped(Exception):
    """Training stopped early on request, after writing a checkpoint."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped at step {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


# --- the step ---------------------------------------------------------------------------------


def rl_step(state: TrainState) -> dict[str, float]:
    stage = state.stage
    cfg, step = stage.cfg, state.step  # the config in force in this stage
    t0 = time.monotonic()

    # 1. Rollouts, scored and shaped, with dynamic sampling (keep groups whose rewards
    # differ; refill): drawn now from this policy, or drawn ahead by the rollout thread from
    # the policy of step - rollout.max_staleness.
    if state.producer is not None:
        ro = state.producer.take(step)
    else:
        ro = collect_rollouts(
            stage, step, step, state.sampler, state.scorer, state.mixture, state.tokenizer
        )
    wait = time.monotonic() - t0
    state.sampled, state.sampled_version, kept = ro.sampled, ro.version, ro.kept

    # 2. Advantages (per group, or group-centred then batch-normalised), then the update.
    metrics: dict[str, float] = {}
    if kept:
        rewards = torch.tensor([r for g in kept for r in g.train_rewards])  # [G*N]
        advantages = rl.compute_advantages(cfg.algo.advantage, rewards, cfg.rollout.n)  # [G*N]
        t = time.monotonic()
        metrics.update(update_policy(state, RolloutBatch.from_groups(kept, advantages)))
        if state.producer is None:  # vLLM copies them in; HF shares the module
            state.sampler.update_weights(state.policy)
        metrics["time/update_s"] = time.monotonic() - t
    state.step += 1
    if state.producer is not None:  # the rollout thread gets the new policy (a copy)
        state.producer.publish(state.step, policy_snapshot(state.policy) if kept else None)

    # 3. Metrics: rewards over every scored sample, the update's stats, throughput.
    metrics.update(ro.metrics)
    if state.producer is not None:
        metrics["async/staleness"] = float(step - ro.version)
        metrics["async/redrawn_groups"] = float(state.producer.redrawn_groups)
        metrics["time/wait_rollouts_s"] = wait
    metrics["time/step_s"] = time.monotonic() - t0
    metrics["perf/tokens_per_s"] = ro.tokens / metrics["time/step_s"]
    metrics["optim/lr"] = float(state.scheduler.get_last_lr()[0])
    return metrics


# --- the loop --------------------------------------------------------------------------------


def train_loop(
    state: TrainState, writer: MetricsWriter, display: Display, validate: Validate
) -> dict[str, float]:
    """Run steps until ``cfg.steps``; validate before, every ``eval.every`` and at the end;
    checkpoint every ``checkpoint.every`` and at the end; switch stages (with a reset) at
    their boundaries. Raises TrainingStopped after checkpointing when
    ``state.stop_requested`` was set during a step."""
    cfg = state.cfg
    final: dict[str, float] = {}
    if cfg.logging.wandb and (state.learner is None or state.learner.is_main):
        writer.attach(start_wandb(cfg, writer.run_dir))  # before step 0's row; closed with it
    enter_stage(state, fresh=state.step == 0)  # a resumed run finds its stage from its step
    if state.schedule.staged:
        display.set_stage(state.stage.label)
    if state.step == 0:
        first_validation(state, writer, display, validate)
    with rollouts_ahead(state):
        while state.step < cfg.steps:
            final = train_step(state, writer, display, validate) or final
    return final


def train_step(
    state: TrainState, writer: MetricsWriter, display: Display, validate: Validate
) -> dict[str, float]:
    """One RL step and what follows it: validation, resets and alarms, a stage change, the
    step's logs and a checkpoint when due. Returns the final validation after the last."""
    cfg = state.cfg
    final: dict[str, float] = {}
    stage, step = state.stage, state.step
    metrics = rl_step(state)
    metrics["stage"] = float(stage.index)
    is_last = state.step == cfg.steps
    if is_last or (cfg.eval.every and state.step % cfg.eval.every == 0):
        ev = validate_now(state, validate)
        metrics.update(ev)
        if is_last:
            final = ev
            display.message(_eval_line("after training", ev))
    begins = None if is_last else state.schedule.begins(state.step)
    # a stage boundary resets anyway: no second reset from a trigger at the same step
    _resets_and_alarms(state, metrics, writer, display, is_last or begins is not None)
    if begins is not None:
        next_stage(state, begins, writer, display)
        metrics["reset"] = 1.0
    writer.log(state.step, metrics)
    # the examples drawn, and the policy that drew them (its update count; step - 1 - it:
    # the staleness)
    drawn = {"step": state.step, "uids": state.sampled, "policy_version": state.sampled_version}
    append_jsonl(writer.run_dir / SAMPLES, drawn)
    display.step(step, metrics)
    if begins is not None:
        display.set_stage(begins.label)
    if state.stop_requested or _checkpoint_due(cfg, state.step):
        checkpoint(state, writer)
    return final


def first_validation(
    state: TrainState, writer: MetricsWriter, display: Display, validate: Validate
) -> None:
    """Step 0: the first stage's event, and the validation of the untrained policy."""
    if state.schedule.staged:
        _stage_event(state, writer, display, "stage", {})
    first = validate(state)
    writer.log(0, {**first, "stage": float(state.stage.index)})
    display.message(_eval_line("before training", first))
    if state.stop_requested:  # signalled during the first validation: nothing trained yet
        checkpoint(state, writer)


def checkpoint(state: TrainState, writer: MetricsWriter) -> None:
    """Save a checkpoint (an event in the log); after a stop request, stop there."""
    folder = save_state(state, writer.run_dir)
    writer.event(state.step, "checkpoint", path=str(folder))
    if state.stop_requested:
        raise TrainingStopped(state.step, folder)


def _checkpoint_due(cfg: Config, step: int) -> bool:
    return step == cfg.steps or bool(cfg.checkpoint.every and step % cfg.checkpoint.every == 0)


# --- resets --------------------------------------------------------------------------------


def _resets_and_alarms(
    state: TrainState,
    metrics: dict[str, Any],
    writer: MetricsWriter,
    display: Display,
    is_last: bool,
) -> None:
    """Health alarms (warn / reset / stop) and reset triggers after a step's validation;
    ``is_last``: no reset (nothing follows, or a stage's reset follows)."""
    alarms = state.health.observe(metrics)
    for a in alarms:
        writer.event(
            state.step,
            "alarm",
            metric=a.metric,
            value=a.value,
            bound=a.bound,
            action=a.action,
            message=a.message,
        )
        display.message(f"alarm at step {state.step}: {a.message} ({a.action})", "red")
        if a.action == "stop":
            state.stop_requested = True
    # no reset after the last update: it would change nothing
    decision = None if is_last else state.resetter.observe(state.step, metrics)
    forced = [f"health: {a.message}" for a in alarms if a.action == "reset"]
    if forced and not is_last:
        reasons = (*decision.reasons, *forced) if decision else tuple(forced)
        cause = {**(decision.metrics if decision else {}), **{a.metric: a.value for a in alarms}}
        best = decision.best_step if decision else state.resetter.best_step
        decision = ResetDecision(reasons, cause, best)
        state.resetter.restart(state.step)
    if decision:
        fields = apply_reset(state, decision, writer.run_dir)
        state.resets.append(writer.event(state.step, "reset", **fields))
        display.message(f"reset at step {state.step}: {decision.reason}", "yellow")
        metrics["reset"] = 1.0


def reset_reference(state: TrainState, reset_optimizer: bool, source: Path | None = None) -> None:
    """Hard reset: the reference becomes the current policy (or the HF folder ``source``,
    a kept checkpoint's policy, read by rank 0 alone in a learner group); optionally fresh
    AdamW state (with the learning rate of the stage in force)."""
    if state.ref is not None:
        if source is None:
            state.ref.load_state_dict(state.policy.state_dict())
        else:
            load_weights(state.ref, source)
    if reset_optimizer:
        state.optimizer, state.scheduler = make_optimizer(state.stage.cfg, state.policy)
    if state.producer is not None and state.cfg.rollout.on_reset == "redraw":
        state.producer.redraw()  # steps drawn ahead by older policies: drawn again


def apply_reset(state: TrainState, decision: ResetDecision, run_dir: Path) -> dict[str, Any]:
    """Reset as ``cfg.reset`` says; return the event fields (reason, cause, new reference)."""
    c = state.cfg.reset
    source, label = None, "policy"
    best = decision.best_step
    if c.target == "best" and best is not None:
        found = kept_checkpoint(run_dir, best)  # a learner group: rank 0's answer
        if found is not None:  # else the best step's checkpoint was not kept: the policy
            source, label = found / "policy", f"checkpoint {found.name}"
    reset_reference(state, c.reset_optimizer, source)
    return {
        "reason": decision.reason,
        "cause": decision.metrics,
        "reference": label,
        "reset_optimizer": c.reset_optimizer,
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# --- stages ------------------------------------------------------------------------------


def enter_stage(state: TrainState, fresh: bool = False) -> None:
    """Apply the stage that runs the next step: its task mix and KL weight. ``fresh``: the
    run has not started, so a staged run rebuilds AdamW in case its first stage changes the
    learning rate."""
    stage = state.stage
    state.mixture.set_weights(stage.weights)
    state.resetter.kl_coef = stage.cfg.algo.kl_coef
    if fresh and state.schedule.staged:
        state.optimizer, state.scheduler = make_optimizer(stage.cfg, state.policy)


def next_stage(state: TrainState, stage: Stage, writer: MetricsWriter, display: Display) -> None:
    """Start ``stage``, which begins at ``state.step``: its settings, then a reset (reference
    <- policy; AdamW re-initialised as the stage says, else only its learning rate set)."""
    enter_stage(state)
    reset_reference(state, stage.reset_optimizer)  # a new AdamW takes the stage's lr
    if not stage.reset_optimizer:
        _set_lr(state, stage.cfg.optim.lr)
    state.resetter.restart(state.step)
    fields = {
        "reason": "stage",
        "cause": {},
        "reference": "policy",
        "reset_optimizer": stage.reset_optimizer,
    }
    state.resets.append(_stage_event(state, writer, display, "reset", fields))


def _stage_event(
    state: TrainState, writer: MetricsWriter, display: Display, kind: str, fields: dict
) -> dict[str, Any]:
    stage = state.stage
    settings = st_describe(state.cfg, stage.index)
    event = writer.event(
        state.step, kind, **fields, stage=stage.index, stage_name=stage.span.name, settings=settings
    )
    shown = ", ".join(f"{k}={v}" for k, v in settings.items()) or "base config"
    what = "reset, " if kind == "reset" else ""
    display.message(
        f"stage {stage.index} ({stage.span.name}) at step {state.step}: {what}{shown}", "yellow"
    )
    return event


def _set_lr(state: TrainState, lr: float) -> None:
    """A new base learning rate for the kept AdamW (its moments stay); warm-up factors too."""
    sched = state.scheduler
    for group, old in zip(state.optimizer.param_groups, sched.base_lrs, strict=True):
        group["lr"] = group["lr"] * lr / old
        group["initial_lr"] = lr
    sched.base_lrs = [lr for _ in sched.base_lrs]
    sched._last_lr = [g["lr"] for g in state.optimizer.param_groups]


# --- logging -----------------------------------------------------------------------------


def start_wandb(cfg: Config, run_dir: Path) -> WandbLogger:
    """The W&B mirror of this run's metrics and events (``logging.*``), with the resolved
    config (the run's, stages included)."""
    lg = cfg.logging
    return WandbLogger.start(
        run_dir,
        to_dict(cfg),
        mode=lg.wandb_mode,
        project=lg.wandb_project,
        name=lg.wandb_name,
        entity=lg.wandb_entity,
        directory=lg.wandb_dir,
    )


def _eval_line(when: str, metrics: dict[str, float]) -> str:
    """``validation after training: success 0.250 (floor 0.000, gain +0.250; mean reward
    0.300)  rg/chain_sum 0.312 [floor 0.000], ...``: every number is a success rate except
    the one named mean reward."""
    tasks = sorted(k[len("eval/") : -len("/pass@1")] for k in metrics if k.endswith("/pass@1"))
    tasks = [t for t in tasks if t]  # not the overall eval/pass@1
    head = f"validation {when}"
    if "eval/pass@1" in metrics:
        extra = (
            [f"floor {metrics['eval/floor']:.3f}", f"gain {metrics['eval/gain']:+.3f}"]
            if ("eval/floor" in metrics)
            else []
        )
        if "eval/mean_reward" in metrics:
            extra.append(f"mean reward {metrics['eval/mean_reward']:.3f}")
        head += f": success {metrics['eval/pass@1']:.3f}" + (
            f" ({', '.join(extra)})" if extra else ""
        )
    parts = []
    for t in tasks:
        floor = metrics.get(f"eval/{t}/floor")
        parts.append(
            f"{t} {metrics[f'eval/{t}/pass@1']:.3f}"
            + (f" [floor {floor:.3f}]" if floor is not None else "")
        )
    return head + (f"  ({', '.join(parts)})" if parts else "")
