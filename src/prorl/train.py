"""The RL step and the training loop, top to bottom.

One step: draw prompts from the task mix -> generate n samples each -> score them in the
verifier pool -> shape the rewards (overlong rule, length penalty) -> drop groups whose
rewards are all equal, refilling from new prompts ->
advantages -> mini-batch updates of the clipped loss plus KL to the frozen reference ->
metrics. Scaling out swaps the Sampler or the verifier executor, never this file.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prorl import checkpoint as ckpt
from prorl import rl
from prorl import stages as st
from prorl.config import Config, ShapingConfig, to_dict
from prorl.display import Display
from prorl.health import HealthMonitor
from prorl.metrics import MetricsWriter, WandbLogger, append_jsonl
from prorl.mixture import TaskMixture
from prorl.models import encode_prompts
from prorl.policy import pack, policy_device, response_logprobs, trainer_attention
from prorl.resets import ResetDecision, ResetPolicy
from prorl.sampling.base import Sampler, derive_seed
from prorl.types import Example, Sample, SamplingParams, Score

SAMPLES = "samples.jsonl"  # per step: the uids of every example drawn (resume checks)


@dataclass
class Group:
    """One prompt's samples and their scores."""

    example: Example
    prompt_ids: list[int]
    samples: list[Sample]
    scores: list[Score]
    shaped: list[float] | None = None  # rewards after shaping; None: the task rewards
    shaping: dict[str, float] = field(default_factory=dict)  # rl.shape_rewards' stats

    @property
    def rewards(self) -> list[float]:
        """The task rewards."""
        return _fill_infra([s.reward for s in self.scores], self.scores)

    @property
    def train_rewards(self) -> list[float]:
        """What filtering and advantages see: the shaped rewards."""
        return self.rewards if self.shaped is None else _fill_infra(self.shaped, self.scores)


def _fill_infra(rewards: list[float], scores: list[Score]) -> list[float]:
    # INFRA_ERROR samples are excluded from the update; for the all-equal test and the
    # advantage they take the mean of the valid ones (so they move nothing).
    valid = [r for r, s in zip(rewards, scores, strict=True) if not s.is_infra_error]
    fill = sum(valid) / len(valid) if valid else 0.0
    return [fill if s.is_infra_error else r for r, s in zip(rewards, scores, strict=True)]


@dataclass
class TrainState:
    """Everything a step reads and updates (and a checkpoint stores)."""

    cfg: Config
    policy: Any
    tokenizer: Any
    ref: Any | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Sampler
    scorer: Any  # callable(groups) -> scores; see prorl.runtime
    mixture: TaskMixture
    step: int = 0
    resets: list[dict[str, Any]] = field(default_factory=list)
    sampled: list[str] = field(default_factory=list)  # uids drawn in the last step
    stop_requested: bool = False  # set by the first SIGINT/SIGTERM: save and stop
    resetter: ResetPolicy | None = None  # built from cfg.reset when not given
    health: HealthMonitor | None = None  # built from cfg.health when not given
    learner: Any = None  # prorl.scale.learner.DataParallel when several processes train
    base_cfg: Config | None = None  # the run's config (with its stages); None: cfg
    stage: int = 0  # index of the current stage; ``cfg`` is its config (prorl.stages)
    stage_start: int = 0  # the step count at which it began

    def __post_init__(self) -> None:
        if self.base_cfg is None:
            self.base_cfg = self.cfg
        if self.resetter is None:
            self.resetter = ResetPolicy(self.cfg.reset, self.cfg.algo.kl_coef)
        if self.health is None:
            self.health = HealthMonitor(self.cfg.health.checks)


class TrainingStopped(Exception):
    """Training stopped early on request, after writing a checkpoint."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped at step {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


def make_optimizer(cfg: Config, policy: Any) -> tuple[torch.optim.Optimizer, Any]:
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


# --- the step ---------------------------------------------------------------------------------


def rl_step(state: TrainState) -> dict[str, float]:
    cfg, step = state.cfg, state.step
    t0 = time.monotonic()

    # 1. Rollouts, scored and shaped, with dynamic sampling: keep groups whose rewards
    # differ; refill.
    ro = cfg.rollout
    params = SamplingParams(ro.temperature, ro.top_p, ro.max_new_tokens)
    batch: rl.DynamicBatch[Group] = rl.DynamicBatch(
        ro.prompts_per_step, ro.max_rounds if ro.dynamic_sampling else 1
    )
    all_groups: list[Group] = []
    state.sampled = []
    timing: dict[str, float] = defaultdict(float)
    while not batch.full and not batch.exhausted:
        examples = state.mixture.draw(batch.need, step, batch.rounds)
        state.sampled += [ex.uid for ex in examples]
        prompt_ids = encode_prompts(state.tokenizer, examples)
        seeds = [derive_seed(cfg.seed, step, ex.uid) for ex in examples]
        t = time.monotonic()
        samples = state.sampler.generate(prompt_ids, ro.n, params, seeds)
        timing["time/generate_s"] += time.monotonic() - t
        t = time.monotonic()
        scores = state.scorer(examples, samples)
        timing["time/score_s"] += time.monotonic() - t
        groups = [Group(*g) for g in zip(examples, prompt_ids, samples, scores, strict=True)]
        shape(groups, cfg.shaping, ro.max_new_tokens, step - state.stage_start)  # before filtering
        all_groups += groups
        if ro.dynamic_sampling:
            batch.add(groups, [g.train_rewards for g in groups])
        else:  # keep everything; all-equal groups then simply carry zero advantage
            batch.add(groups, [[float(i) for i in range(ro.n)] for _ in groups])
    warning = batch.warning() if ro.dynamic_sampling else None
    kept = batch.groups

    # 2. Advantages (per group, or group-centred then batch-normalised).
    metrics: dict[str, float] = {**timing}
    if kept:
        rewards = torch.tensor([r for g in kept for r in g.train_rewards])  # [G*N]
        advantages = rl.compute_advantages(cfg.algo.advantage, rewards, ro.n)  # [G*N]
        t = time.monotonic()
        metrics.update(update_policy(state, kept, advantages))
        state.sampler.update_weights(state.policy)  # vLLM copies them in; HF shares the module
        metrics["time/update_s"] = time.monotonic() - t
    state.step += 1

    # 3. Metrics: rewards over every scored sample, the update's stats, throughput.
    metrics.update(rollout_metrics(all_groups, kept, batch, ro.max_new_tokens))
    metrics["time/step_s"] = time.monotonic() - t0
    tokens = sum(len(s.token_ids) for g in all_groups for s in g.samples)
    metrics["perf/gen_tokens_per_s"] = tokens / max(metrics["time/generate_s"], 1e-9)
    metrics["perf/tokens_per_s"] = tokens / metrics["time/step_s"]
    metrics["optim/lr"] = state.scheduler.get_last_lr()[0]
    if warning:
        metrics["filter/saturated"] = 1.0
    return metrics


def shape(groups: list[Group], cfg: ShapingConfig, cap: int, step_in_stage: int) -> None:
    """Reward shaping (format credit, overlong rule, cyclic cosine length penalty) of each
    group's rewards; the task rewards stay in ``Group.rewards`` for the metrics."""
    for g in groups:
        shaped, g.shaping = rl.shape_rewards(
            torch.tensor(g.rewards),
            torch.tensor([len(s.token_ids) for s in g.samples]),
            torch.tensor([s.finish_reason == "length" for s in g.samples]),
            cfg, cap, step_in_stage,
            formatted=torch.tensor([sc.formatted is True for sc in g.scores]),
        )  # fmt: skip
        g.shaped = shaped.tolist()


def update_policy(state: TrainState, groups: list[Group], advantages: torch.Tensor) -> dict:
    """Mini-batch updates of clipped loss + KL over the kept groups; returns mean stats.

    With ``state.learner`` (several torch.distributed processes) each mini-batch's sequences
    are split across the ranks, the gradients summed by DDP, and every rank steps the same
    optimizer: the update equals this process doing all the work (prorl.scale.learner)."""
    cfg, algo = state.cfg, state.cfg.algo
    dp = state.learner
    seqs = [
        (g.prompt_ids, list(s.token_ids), list(s.logprobs), not sc.is_infra_error)
        for g in groups
        for s, sc in zip(g.samples, g.scores, strict=True)
    ]
    # Exactly algo.mini_batches optimizer steps, each a contiguous run of sequences cut into
    # micro-batches; the loss of each is normalised by the mini-batch's own token (or
    # sequence) count so accumulation equals one big batch.
    mbs = algo.micro_batch_size
    mini_seqs = rl.plan_minibatches(len(seqs), algo.mini_batches)
    micro: list[list[int]] = []  # this process's micro-batches (sequence indices)
    weight: list[float] = []  # 0 for a rank's padding micro-batch (DDP needs equal counts)
    minis: list[list[int]] = []
    for ids in mini_seqs:
        own = dp.shard(ids, mbs) if dp else _micro_batches(ids, mbs)
        minis.append(list(range(len(micro), len(micro) + len(own))))
        micro += [m for m, _ in own]
        weight += [w for _, w in own]
    # every tensor of the update lives where the policy computes (prorl.device)
    device = policy_device(state.policy)
    packed = [
        pack([seqs[i][0] for i in m], [seqs[i][1] for i in m], _pad(state)).to(device)
        for m in micro
    ]
    masks = [
        p.response_mask * torch.tensor([float(seqs[i][3]) for i in m], device=device)[:, None]
        for p, m in zip(packed, micro, strict=True)
    ]
    advantages = advantages.to(device)
    counts = [len(s[1]) * float(s[3]) for s in seqs]  # valid response tokens per sequence
    temp, bf16, comp = cfg.rollout.temperature, cfg.model.bf16, cfg.model.compile
    need_old = algo.old_logprobs == "trainer" and (algo.mini_batches > 1 or algo.epochs > 1)
    old, ref = [], []
    sampler_lp = [_pad_logprobs([seqs[i][2] for i in m], p.response_ids.shape[1]).to(device)
                  for p, m in zip(packed, micro, strict=True)]  # fmt: skip
    with torch.no_grad():  # frozen quantities, computed once before any update
        for j, p in enumerate(packed):
            if need_old:
                old.append(response_logprobs(state.policy, p, temp, bf16, compile=comp)[0])
            elif algo.old_logprobs == "sampler":
                old.append(sampler_lp[j])
            if state.ref is not None and algo.kl_coef > 0:
                ref.append(response_logprobs(state.ref, p, temp, bf16, compile=comp)[0])

    model = dp.model if dp else state.policy  # DDP's wrapper: its backward sums gradients
    loss_fn = rl.POLICY_LOSSES[algo.policy_loss]  # ppo (clipped token ratio), gspo or cispo
    logged: tuple[str, ...] = ("clipfrac", "clipfrac_high", "clipfrac_low", "ratio_max")
    logged += ("approx_kl", *rl.EXTRA_STATS[algo.policy_loss])  # e.g. gspo's per sequence
    stats: dict[str, list[float]] = defaultdict(list)
    state.policy.train()
    for epoch in range(algo.epochs):
        for mini_ids, mini in zip(mini_seqs, minis, strict=True):
            denom = _denominator(algo.loss_agg, [counts[i] for i in mini_ids])
            state.optimizer.zero_grad(set_to_none=True)
            for j in mini:
                p, m, mask = packed[j], micro[j], masks[j]
                sync = dp.sync(last=j == mini[-1]) if dp else contextlib.nullcontext()
                with sync:
                    logprobs, entropy = response_logprobs(model, p, temp, bf16, epoch == 0, comp)
                    old_lp = old[j] if old else logprobs.detach()
                    adv = advantages[m]  # [b]
                    record = epoch == 0 and weight[j] > 0
                    is_w = _sampler_mismatch(algo, old_lp, sampler_lp[j], mask, stats, record)
                    pg, pg_stats = loss_fn(
                        logprobs, old_lp, adv, mask, algo.eps_low, algo.eps_high,
                        algo.loss_agg, cfg.rollout.max_new_tokens, is_weights=is_w, denom=denom,
                    )  # fmt: skip
                    loss = pg
                    if ref:
                        kl_tokens = rl.kl_penalty(logprobs, ref[j], algo.kl_kind)  # [b, R]
                        kl = rl.aggregate(
                            kl_tokens, mask, algo.loss_agg, cfg.rollout.max_new_tokens, denom
                        )
                        loss = pg + algo.kl_coef * kl
                    # DDP averages over ranks: scale so the ranks' gradients sum instead.
                    # The forward's attention again: gradient checkpointing recomputes it here
                    with trainer_attention(model):
                        (loss * (weight[j] * (dp.world if dp else 1))).backward()
                if weight[j] == 0:
                    continue
                if ref:
                    stats["policy/kl"].append(float(rl.masked_mean(kl_tokens.detach(), mask)))
                for k in logged:
                    stats[f"policy/{k}"].append(pg_stats[k])
                stats["loss/pg"].append(pg_stats["pg_loss"])
                if entropy is not None:
                    stats["policy/entropy"].append(float(rl.masked_mean(entropy, mask)))
            if cfg.optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(
                    state.policy.parameters(), cfg.optim.grad_clip
                )
                stats["optim/grad_norm"].append(float(norm))
            state.optimizer.step()
    state.scheduler.step()  # the schedule counts RL steps
    if dp:  # every rank reports the statistics of all micro-batches
        stats = dp.gather_stats(stats)
    return {k: float(np.mean(v)) for k, v in stats.items()}


def _sampler_mismatch(
    algo: Any, old_lp: torch.Tensor, sampler_lp: torch.Tensor, mask: torch.Tensor,
    stats: dict[str, list[float]], record: bool,
) -> torch.Tensor | None:  # fmt: skip
    """Truncated IS weights (when ``algo.truncated_is``) between the trainer's pi_old and the
    rollout engine's log-probs of the same tokens; records their mismatch as metrics. With
    ``old_logprobs: sampler`` the ratio already starts from the engine's log-probs: nothing."""
    if algo.old_logprobs != "trainer":
        return None
    weights, s = rl.truncated_is_weights(old_lp, sampler_lp, mask, algo.is_low, algo.is_high)
    if record:  # once per micro-batch: pi_old and the sampler's log-probs do not change
        stats["rollout/logprob_mismatch_abs"].append(s["mismatch_abs_mean"])
        stats["rollout/tis_weight_mean"].append(s["is_weight_mean"])
        stats["rollout/tis_clipped_frac"].append(s["is_clamped_frac"])
    return weights if algo.truncated_is else None


def _micro_batches(ids: list[int], size: int) -> list[tuple[list[int], float]]:
    return [(ids[i : i + size], 1.0) for i in range(0, len(ids), size)]


def _denominator(agg: str, counts: list[float]) -> float:
    """The mini-batch's token count (token-mean) or count of sequences with a valid token,
    from every sequence of it (on all ranks)."""
    if agg == "token-mean":
        return max(1.0, float(sum(counts)))
    return max(1.0, float(sum(c > 0 for c in counts)))


def _pad_logprobs(rows: list[list[float]], width: int) -> torch.Tensor:
    out = torch.zeros((len(rows), width))  # [b, R]
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def _pad(state: TrainState) -> int:
    return int(state.tokenizer.pad_token_id)


def rollout_metrics(
    all_groups: list[Group], kept: list[Group], batch: rl.DynamicBatch, cap: int
) -> dict[str, float]:
    m: dict[str, float] = {}
    scores = [s for g in all_groups for s in g.scores]
    samples = [s for g in all_groups for s in g.samples]
    valid = [s.reward for s in scores if not s.is_infra_error]
    m["train/reward"] = float(np.mean(valid)) if valid else 0.0
    by_task: dict[str, list[float]] = defaultdict(list)
    for g in all_groups:
        by_task[g.example.task].extend(s.reward for s in g.scores if not s.is_infra_error)
    for task, rs in by_task.items():
        m[f"train/reward/{task}"] = float(np.mean(rs)) if rs else 0.0
    shaped = [r for g in all_groups for r, s in zip(g.train_rewards, g.scores, strict=True)
              if not s.is_infra_error]  # fmt: skip
    m["train/reward_shaped"] = float(np.mean(shaped)) if shaped else 0.0
    n = max(1, sum(len(g.samples) for g in all_groups))
    flags = [s.formatted for s in scores if s.formatted is not None]
    if flags:  # tasks with an answer format: how often the answer came in it
        m["train/format_rate"] = float(np.mean(flags))
    # training-only reward added for answers in the task's format (shaping.format_reward)
    m["train/format_credit"] = sum(g.shaping.get("format_credit", 0.0) for g in all_groups) / n
    m["shaping/overlong_frac"] = sum(g.shaping.get("overlong", 0.0) for g in all_groups) / n
    m["shaping/length_penalty_mean"] = (
        sum(g.shaping.get("length_penalty", 0.0) for g in all_groups) / n
    )
    m["shaping/length_penalty_on"] = max((g.shaping.get("on", 0.0) for g in all_groups), default=0)
    lengths = [len(s.token_ids) for s in samples]
    m["response/length_mean"] = float(np.mean(lengths)) if lengths else 0.0
    m["response/length_max"] = float(max(lengths, default=0))
    m["response/truncated_frac"] = float(np.mean([s.finish_reason == "length" for s in samples]))
    m["verify/timeouts"] = float(sum(s.reason == "TIMEOUT" for s in scores))
    m["verify/infra_errors"] = float(sum(s.is_infra_error for s in scores))
    m.update(batch.metrics())  # filter/kept_frac: informative groups / groups seen
    return m


# --- resets --------------------------------------------------------------------------------


def reset_reference(state: TrainState, reset_optimizer: bool, source: Path | None = None) -> None:
    """Hard reset: the reference becomes the current policy (or the HF folder ``source``,
    a kept checkpoint's policy, read by rank 0 alone in a learner group); optionally fresh
    AdamW state."""
    if state.ref is not None:
        if source is None:
            state.ref.load_state_dict(state.policy.state_dict())
        else:
            ckpt.load_weights(state.ref, source)
    if reset_optimizer:
        state.optimizer, state.scheduler = make_optimizer(state.cfg, state.policy)


def apply_reset(state: TrainState, decision: ResetDecision, run_dir: Path) -> dict[str, Any]:
    """Reset as ``cfg.reset`` says; return the event fields (reason, cause, new reference)."""
    c = state.cfg.reset
    source, label = None, "policy"
    best = decision.best_step
    if c.target == "best" and best is not None:
        found = ckpt.kept_checkpoint(run_dir, best)  # a learner group: rank 0's answer
        if found is not None:  # else the best step's checkpoint was not kept: the policy
            source, label = found / "policy", f"checkpoint {found.name}"
    reset_reference(state, c.reset_optimizer, source)
    return {"reason": decision.reason, "cause": decision.metrics, "reference": label,
            "reset_optimizer": c.reset_optimizer}  # fmt: skip


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def frozen_copy(model: Any) -> Any:
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --- checkpoints --------------------------------------------------------------------------


def _checkpoint_due(cfg: Config, step: int) -> bool:
    return step == cfg.steps or bool(cfg.checkpoint.every and step % cfg.checkpoint.every == 0)


# --- the loop --------------------------------------------------------------------------------


def train_loop(
    state: TrainState, writer: MetricsWriter, display: Display, validate: Any
) -> dict[str, float]:
    """Run steps until ``cfg.steps``; validate before, every ``eval.every`` and at the end;
    checkpoint every ``checkpoint.every`` and at the end; switch stages (with a reset) at
    their boundaries. Raises TrainingStopped after checkpointing when
    ``state.stop_requested`` was set during a step."""
    cfg = state.base_cfg
    assert cfg is not None
    final: dict[str, float] = {}
    if cfg.logging.wandb and (state.learner is None or state.learner.is_main):
        writer.attach(start_wandb(cfg, writer.run_dir))  # before step 0's row; closed with it
    set_stage(state, fresh=state.step == 0)  # a resumed run finds its stage from its step
    if cfg.stages:
        display.set_stage(st.label(cfg, state.stage))
    if state.step == 0:
        if cfg.stages:
            _stage_event(state, writer, display, "stage", {})
        first = validate(state)
        writer.log(0, {**first, "stage": float(state.stage)})
        display.message(_eval_line("before training", first))
        if state.stop_requested:  # signalled during the first validation: nothing trained yet
            folder = ckpt.save_state(state, writer.run_dir)
            writer.event(0, "checkpoint", path=str(folder))
            raise TrainingStopped(0, folder)
    while state.step < cfg.steps:
        step = state.step
        metrics = rl_step(state)
        metrics["stage"] = float(state.stage)
        is_last = state.step == cfg.steps
        if is_last or (cfg.eval.every and state.step % cfg.eval.every == 0):
            ev = validate(state)
            metrics.update(ev)
            if is_last:
                final = ev
                display.message(_eval_line("after training", ev))
        boundary = None if is_last else st.starts_stage(cfg, state.step)
        # a stage boundary resets anyway: no second reset from a trigger at the same step
        _resets_and_alarms(state, metrics, writer, display, is_last or boundary is not None)
        if boundary is not None:
            next_stage(state, writer, display)
            metrics["reset"] = 1.0
        writer.log(state.step, metrics)
        append_jsonl(writer.run_dir / SAMPLES, {"step": state.step, "uids": state.sampled})
        display.step(step, metrics)
        if boundary is not None:
            display.set_stage(st.label(cfg, state.stage))
        if state.stop_requested or _checkpoint_due(cfg, state.step):
            folder = ckpt.save_state(state, writer.run_dir)
            writer.event(state.step, "checkpoint", path=str(folder))
            if state.stop_requested:
                raise TrainingStopped(state.step, folder)
    return final


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


def _resets_and_alarms(
    state: TrainState, metrics: dict[str, Any], writer: MetricsWriter, display: Display,
    is_last: bool,
) -> None:  # fmt: skip
    """Health alarms (warn / reset / stop) and reset triggers after a step's validation;
    ``is_last``: no reset (nothing follows, or a stage's reset follows)."""
    assert state.resetter is not None and state.health is not None
    alarms = state.health.observe(metrics)
    for a in alarms:
        writer.event(state.step, "alarm", metric=a.metric, value=a.value, bound=a.bound,
                     action=a.action, message=a.message)  # fmt: skip
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


# --- stages ------------------------------------------------------------------------------


def set_stage(state: TrainState, fresh: bool = False) -> None:
    """Make ``state.cfg`` the config of the stage that runs the next step, and the task
    mixture draw with its weights. ``fresh``: the run has not started, so the optimizer is
    rebuilt in case the first stage changes the learning rate."""
    base = state.base_cfg
    assert base is not None and state.resetter is not None
    state.stage, state.cfg = st.config_for_step(base, state.step)
    state.stage_start = st.stage_spans(base)[state.stage].start
    state.mixture.set_weights(st.stage_weights(state.cfg))
    state.resetter.kl_coef = state.cfg.algo.kl_coef
    if fresh and base.stages:
        state.optimizer, state.scheduler = make_optimizer(state.cfg, state.policy)


def next_stage(state: TrainState, writer: MetricsWriter, display: Display) -> None:
    """Start the stage that begins at ``state.step``: its settings, then a reset (reference
    <- policy; AdamW re-initialised as the stage says, else only its learning rate set)."""
    assert state.base_cfg is not None and state.resetter is not None
    set_stage(state)
    reset_optimizer = st.reset_optimizer_at(state.base_cfg, state.stage)
    reset_reference(state, reset_optimizer)  # a new AdamW takes the stage's lr
    if not reset_optimizer:
        _set_lr(state, state.cfg.optim.lr)
    state.resetter.restart(state.step)
    fields = {"reason": "stage", "cause": {}, "reference": "policy",
              "reset_optimizer": reset_optimizer}  # fmt: skip
    state.resets.append(_stage_event(state, writer, display, "reset", fields))


def _stage_event(
    state: TrainState, writer: MetricsWriter, display: Display, kind: str, fields: dict
) -> dict[str, Any]:
    assert state.base_cfg is not None
    span = st.stage_spans(state.base_cfg)[state.stage]
    settings = st.describe(state.base_cfg, state.stage)
    event = writer.event(state.step, kind, **fields, stage=state.stage, stage_name=span.name,
                         settings=settings)  # fmt: skip
    shown = ", ".join(f"{k}={v}" for k, v in settings.items()) or "base config"
    what = "reset, " if kind == "reset" else ""
    display.message(f"stage {state.stage} ({span.name}) at step {state.step}: {what}{shown}",
                    "yellow")  # fmt: skip
    return event


def _set_lr(state: TrainState, lr: float) -> None:
    """A new base learning rate for the kept AdamW (its moments stay); warm-up factors too."""
    sched = state.scheduler
    for group, old in zip(state.optimizer.param_groups, sched.base_lrs, strict=True):
        group["lr"] = group["lr"] * lr / old
        group["initial_lr"] = lr
    sched.base_lrs = [lr for _ in sched.base_lrs]
    sched._last_lr = [g["lr"] for g in state.optimizer.param_groups]


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


def run_dir_path(cfg: Config) -> Path:
    return Path(cfg.run_dir)
