"""The RL step and the training loop, top to bottom.

One step: draw prompts from the task mix -> generate n samples each -> score them in the
verifier pool -> drop groups whose rewards are all equal, refilling from new prompts ->
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
from prorl.config import Config
from prorl.display import Display
from prorl.health import HealthMonitor
from prorl.metrics import MetricsWriter, append_jsonl
from prorl.mixture import TaskMixture
from prorl.models import encode_prompts
from prorl.policy import pack, response_logprobs
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

    @property
    def rewards(self) -> list[float]:
        # INFRA_ERROR samples are excluded from the update; for the all-equal test and the
        # advantage they take the mean of the valid ones (so they move nothing).
        valid = [s.reward for s in self.scores if not s.is_infra_error]
        fill = sum(valid) / len(valid) if valid else 0.0
        return [fill if s.is_infra_error else s.reward for s in self.scores]


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

    def __post_init__(self) -> None:
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

    # 1. Rollouts, with dynamic sampling: keep groups whose rewards differ; refill.
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
        all_groups += groups
        if ro.dynamic_sampling:
            batch.add(groups, [g.rewards for g in groups])
        else:  # keep everything; all-equal groups then simply carry zero advantage
            batch.add(groups, [[float(i) for i in range(ro.n)] for _ in groups])
    warning = batch.warning() if ro.dynamic_sampling else None
    kept = batch.groups

    # 2. Advantages (per group, or group-centred then batch-normalised).
    metrics: dict[str, float] = {**timing}
    if kept:
        rewards = torch.tensor([r for g in kept for r in g.rewards])  # [G*N]
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
    # Mini-batches are contiguous runs of micro-batches; the loss of each is normalised by
    # the mini-batch's own token (or sequence) count so accumulation equals one big batch.
    mbs = algo.micro_batch_size
    per_mini = max(1, -(-len(seqs) // mbs) // algo.mini_batches) * mbs  # sequences
    mini_seqs = [
        list(range(i, min(i + per_mini, len(seqs)))) for i in range(0, len(seqs), per_mini)
    ]
    micro: list[list[int]] = []  # this process's micro-batches (sequence indices)
    weight: list[float] = []  # 0 for a rank's padding micro-batch (DDP needs equal counts)
    minis: list[list[int]] = []
    for ids in mini_seqs:
        own = dp.shard(ids, mbs) if dp else _micro_batches(ids, mbs)
        minis.append(list(range(len(micro), len(micro) + len(own))))
        micro += [m for m, _ in own]
        weight += [w for _, w in own]
    packed = [pack([seqs[i][0] for i in m], [seqs[i][1] for i in m], _pad(state)) for m in micro]
    masks = [
        p.response_mask * torch.tensor([float(seqs[i][3]) for i in m])[:, None]
        for p, m in zip(packed, micro, strict=True)
    ]
    counts = [len(s[1]) * float(s[3]) for s in seqs]  # valid response tokens per sequence
    temp, bf16 = cfg.rollout.temperature, cfg.model.bf16
    need_old = algo.old_logprobs == "trainer" and (algo.mini_batches > 1 or algo.epochs > 1)
    old, ref = [], []
    sampler_lp = [_pad_logprobs([seqs[i][2] for i in m], p.response_ids.shape[1])
                  for p, m in zip(packed, micro, strict=True)]  # fmt: skip
    with torch.no_grad():  # frozen quantities, computed once before any update
        for j, p in enumerate(packed):
            if need_old:
                old.append(response_logprobs(state.policy, p, temp, bf16)[0])
            elif algo.old_logprobs == "sampler":
                old.append(sampler_lp[j])
            if state.ref is not None and algo.kl_coef > 0:
                ref.append(response_logprobs(state.ref, p, temp, bf16)[0])

    model = dp.model if dp else state.policy  # DDP's wrapper: its backward sums gradients
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
                    logprobs, entropy = response_logprobs(model, p, temp, bf16, epoch == 0)
                    old_lp = old[j] if old else logprobs.detach()
                    adv = advantages[m]  # [b]
                    record = epoch == 0 and weight[j] > 0
                    is_w = _sampler_mismatch(algo, old_lp, sampler_lp[j], mask, stats, record)
                    pg, pg_stats = rl.policy_loss(
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
                    # DDP averages over ranks: scale so the ranks' gradients sum instead
                    (loss * (weight[j] * (dp.world if dp else 1))).backward()
                if weight[j] == 0:
                    continue
                if ref:
                    stats["policy/kl"].append(float(rl.masked_mean(kl_tokens.detach(), mask)))
                for k in ("clipfrac", "clipfrac_high", "clipfrac_low", "ratio_max", "approx_kl"):
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
    a kept checkpoint's policy); optionally fresh AdamW state."""
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
        found = [d for d in ckpt.checkpoint_dirs(run_dir) if d.name == ckpt.step_name(best)]
        if found:  # else the best step's checkpoint was not kept: the current policy
            source, label = found[0] / "policy", f"checkpoint {found[0].name}"
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
    checkpoint every ``checkpoint.every`` and at the end. Raises TrainingStopped after
    checkpointing when ``state.stop_requested`` was set during a step."""
    cfg = state.cfg
    final: dict[str, float] = {}
    if state.step == 0:
        first = validate(state)
        writer.log(0, first)
        display.message(_eval_line("before training", first))
        if state.stop_requested:  # signalled during the first validation: nothing trained yet
            folder = ckpt.save_state(state, writer.run_dir)
            writer.event(0, "checkpoint", path=str(folder))
            raise TrainingStopped(0, folder)
    while state.step < cfg.steps:
        step = state.step
        metrics = rl_step(state)
        is_last = state.step == cfg.steps
        if is_last or (cfg.eval.every and state.step % cfg.eval.every == 0):
            ev = validate(state)
            metrics.update(ev)
            if is_last:
                final = ev
                display.message(_eval_line("after training", ev))
        _resets_and_alarms(state, metrics, writer, display, is_last)
        writer.log(state.step, metrics)
        append_jsonl(writer.run_dir / SAMPLES, {"step": state.step, "uids": state.sampled})
        display.step(step, metrics)
        if state.stop_requested or _checkpoint_due(cfg, state.step):
            folder = ckpt.save_state(state, writer.run_dir)
            writer.event(state.step, "checkpoint", path=str(folder))
            if state.stop_requested:
                raise TrainingStopped(state.step, folder)
    return final


def _resets_and_alarms(
    state: TrainState, metrics: dict[str, Any], writer: MetricsWriter, display: Display,
    is_last: bool,
) -> None:  # fmt: skip
    """Health alarms (warn / reset / stop) and reset triggers after a step's validation."""
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


def _eval_line(when: str, metrics: dict[str, float]) -> str:
    value = metrics.get("eval/reward")
    parts = [
        f"{k[len('eval/') : -len('/pass@1')]} {v:.3f}"
        for k, v in sorted(metrics.items())
        if k.endswith("/pass@1")
    ]
    head = f"validation {when}: reward {value:.3f}" if value is not None else f"validation {when}"
    return head + (f"  ({', '.join(parts)})" if parts else "")


def run_dir_path(cfg: Config) -> Path:
    return Path(cfg.run_dir)
