"""The policy update of one RL step: the rollout batch -> ``algo.mini_batches`` optimizer steps.

    plan (``rl.plan_update``) -> micro-batch tensors -> frozen log-probs (pi_old, reference)
    -> for each mini-batch: ``micro_step`` per micro-batch (loss ``rl.rl_objective``,
    backward) -> clip -> AdamW step

With ``state.learner`` (several torch.distributed processes) each mini-batch's sequences are
split across the ranks, the gradients summed by DDP, and every rank steps the same
optimizer: the update equals this process doing all the work (``prorl.scale.learner``).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from prorl import rl
from prorl.config import AlgoConfig, Config
from prorl.policy import PackedBatch, pack, policy_device, response_logprobs, trainer_attention
from prorl.rollouts import RolloutBatch
from prorl.state import TrainState

Stats = dict[str, list[float]]  # metric name -> one value per micro-batch (averaged at the end)


@dataclass
class MicroInputs:
    """One micro-batch's tensors, on the device where the policy computes."""

    weight: float  # 0: a learner rank's padding pass (its gradient and stats are dropped)
    packed: PackedBatch
    mask: torch.Tensor  # [b, R] response tokens of valid sequences
    advantages: torch.Tensor  # [b]
    sampler_logprobs: torch.Tensor  # [b, R] the rollout engine's
    old_logprobs: torch.Tensor | None = None  # [b, R] frozen pi_old; None: the current pass's
    ref_logprobs: torch.Tensor | None = None  # [b, R] the reference's; None: no KL term


def update_policy(state: TrainState, batch: RolloutBatch) -> dict[str, float]:
    """``algo.epochs`` passes of ``algo.mini_batches`` optimizer steps over ``batch``;
    returns the mean of each statistic over the micro-batches (all ranks)."""
    cfg = state.stage.cfg
    algo, learner = cfg.algo, state.learner
    plan = rl.plan_update(
        len(batch), algo.mini_batches, algo.micro_batch_size, learner.shard if learner else None
    )
    device = policy_device(state.policy)
    pad = int(state.tokenizer.pad_token_id)
    advantages = batch.advantages.to(device)
    inputs = [
        [micro_inputs(batch, m, advantages, pad, device) for m in mini.micro] for mini in plan
    ]
    frozen_logprobs(state, cfg, [mi for minis in inputs for mi in minis])

    counts = batch.token_counts
    model = learner.model if learner else state.policy  # DDP's wrapper sums the gradients
    stats: Stats = defaultdict(list)
    state.policy.train()
    for epoch in range(algo.epochs):
        for mini, micros in zip(plan, inputs, strict=True):
            denom = _denominator(algo.loss_agg, [counts[i] for i in mini.ids])
            state.optimizer.zero_grad(set_to_none=True)
            for j, mi in enumerate(micros):
                micro_step(state, cfg, model, mi, denom, epoch, j == len(micros) - 1, stats)
            if cfg.optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(
                    state.policy.parameters(), cfg.optim.grad_clip
                )
                stats["optim/grad_norm"].append(float(norm))
            state.optimizer.step()
    state.scheduler.step()  # the schedule counts RL steps
    if learner:  # every rank reports the statistics of all micro-batches
        stats = learner.gather_stats(stats)
    return {k: float(np.mean(v)) for k, v in stats.items()}


def micro_inputs(
    batch: RolloutBatch,
    micro: rl.MicroBatch,
    advantages: torch.Tensor,
    pad: int,
    device: torch.device,
) -> MicroInputs:
    """Pack one micro-batch's sequences and gather its per-sequence fields."""
    ids = micro.ids
    packed = pack([batch.prompt_ids[i] for i in ids], [batch.response_ids[i] for i in ids], pad)
    packed = packed.to(device)
    valid = torch.tensor([float(batch.valid[i]) for i in ids], device=device)
    width = packed.response_ids.shape[1]
    sampler = _pad_logprobs([batch.sampler_logprobs[i] for i in ids], width).to(device)
    return MicroInputs(
        micro.weight, packed, packed.response_mask * valid[:, None], advantages[ids], sampler
    )


def frozen_logprobs(state: TrainState, cfg: Config, inputs: list[MicroInputs]) -> None:
    """Fill in what stays fixed during the update, computed once before it: pi_old's
    log-probs (the trainer's when ``algo.old_logprobs: trainer`` and the policy moves within
    the step; the engine's when ``sampler``) and the reference's (when KL is on)."""
    algo = cfg.algo
    temp, bf16, comp = cfg.rollout.temperature, cfg.model.bf16, cfg.model.compile
    need_old = algo.old_logprobs == "trainer" and (algo.mini_batches > 1 or algo.epochs > 1)
    with torch.no_grad():
        for mi in inputs:
            if need_old:
                mi.old_logprobs = response_logprobs(
                    state.policy, mi.packed, temp, bf16, compile=comp
                )[0]
            elif algo.old_logprobs == "sampler":
                mi.old_logprobs = mi.sampler_logprobs
            if state.ref is not None and algo.keeps_reference:
                mi.ref_logprobs = response_logprobs(state.ref, mi.packed, temp, bf16, compile=comp)[
                    0
                ]


def micro_step(
    state: TrainState,
    cfg: Config,
    model: torch.nn.Module,
    mi: MicroInputs,
    denom: float,
    epoch: int,
    last: bool,
    stats: Stats,
) -> None:
    """Forward, loss and backward of one micro-batch (gradients accumulate until the
    mini-batch's optimizer step); its statistics are appended to ``stats``."""
    algo, learner = cfg.algo, state.learner
    sync = learner.sync(last=last) if learner else contextlib.nullcontext()
    with sync:
        logprobs, entropy = response_logprobs(
            model,
            mi.packed,
            cfg.rollout.temperature,
            cfg.model.bf16,
            epoch == 0,
            cfg.model.compile,
        )
        old = mi.old_logprobs if mi.old_logprobs is not None else logprobs.detach()
        record = epoch == 0 and mi.weight > 0
        is_w = _sampler_mismatch(algo, old, mi.sampler_logprobs, mi.mask, stats, record)
        loss, s = rl.rl_objective(
            algo.policy_loss,
            logprobs,
            old,
            mi.advantages,
            mi.mask,
            algo.eps_low,
            algo.eps_high,
            algo.loss_agg,
            cfg.rollout.max_new_tokens,
            is_weights=is_w,
            denom=denom,
            ref_logprobs=mi.ref_logprobs,
            kl_coef=algo.kl_coef,
            kl_kind=algo.kl_kind,
        )
        # DDP averages over ranks: scale so the ranks' gradients sum instead.
        # The forward's attention again: gradient checkpointing recomputes it here
        with trainer_attention(model):
            (loss * (mi.weight * (learner.world if learner else 1))).backward()
    if mi.weight == 0:
        return
    if "kl" in s:
        stats["policy/kl"].append(s["kl"])
    for k in ("clipfrac", "clipfrac_high", "clipfrac_low", "ratio_max", "approx_kl"):
        stats[f"policy/{k}"].append(s[k])
    for k in rl.EXTRA_STATS[algo.policy_loss]:  # e.g. gspo's per-sequence clipping
        stats[f"policy/{k}"].append(s[k])
    stats["loss/pg"].append(s["pg_loss"])
    if entropy is not None:
        stats["policy/entropy"].append(float(rl.masked_mean(entropy, mi.mask)))


def _sampler_mismatch(
    algo: AlgoConfig,
    old_lp: torch.Tensor,
    sampler_lp: torch.Tensor,
    mask: torch.Tensor,
    stats: Stats,
    record: bool,
) -> torch.Tensor | None:
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
        for k in ("ratio_max", "ratio_min", "ratio_std"):  # per micro-batch, then averaged
            stats[f"rollout/is_{k}"].append(s[k])
    return weights if algo.truncated_is else None


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
