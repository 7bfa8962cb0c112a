"""Learner efficiency: the update's FLOP/s as a fraction of this machine's bf16 matmul peak.

    .venv/bin/python bench/bench_learner.py [--repeats 3] [--threads 2] [--variant "k=v ..."]

One rollout batch of the default job's shape (cpu-smollm2: 4 prompts x 8 samples, real
prompts from its task mix, responses of ``max_new_tokens`` random tokens so every variant
sees the same token count) goes through ``prorl.update.update_policy`` (reference forward,
policy forward/backward, one AdamW step). Interleaved with it, in the same process and
with the same threads, torch.matmul in bf16 on square matrices gives the machine's peak.

FLOPs counted: the policy's forward + backward (3 forwards' worth) plus one forward of the
frozen reference (the KL term's recomputation); a forward is 2 x (params - LM head) per real,
non-pad token (prompts are processed too) + 2 x LM head per response token (prorl computes
no logits at prompt positions). The usual 6 x N x tokens count, which also charges the LM
head at prompt positions, is reported beside it. Attention's own FLOPs are left out (small
at these lengths), so the fractions slightly under-state the work done.

The fraction of peak is given per wall second (what a user waits) and per CPU second of the
process divided by its threads (the peak measured the same way), which holds up better when
other processes share the CPU. ``--variant before`` runs the learner as it was before the
attention/LM-head changes (sdpa attention in the backward, logits at every position), in the
same process, for an A/B. Medians over ``--repeats`` interleaved runs; writes
bench/results/learner.json. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import prorl.update as update_mod
from prorl.config import load_config
from prorl.mixture import MixtureEntry, TaskMixture
from prorl.models import encode_prompts, load_policy
from prorl.policy import cpu_has_fast_bf16
from prorl.rollouts import PromptGroup, RolloutBatch
from prorl.state import TrainState, frozen_copy, make_optimizer
from prorl.tasks import build_tasks
from prorl.types import Sample, Score
from prorl.update import update_policy

SIZES = (1024, 2048, 4096)


def matmul_peak(sizes: tuple[int, ...] = SIZES, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Best GFLOP/s of ``a @ b`` for square ``[n, n]`` matrices of each size, per wall second
    and per CPU second of this process divided by the thread count (robust to other load)."""
    threads = torch.get_num_threads()
    wall, cpu = {}, {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.matmul(a, b)  # warm-up (oneDNN picks its kernel)
        reps = max(2, int(1e10 / (2 * n**3)))
        best_w = best_c = float("inf")
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            for _ in range(reps):
                torch.matmul(a, b)
            best_w = min(best_w, (time.perf_counter() - t) / reps)
            best_c = min(best_c, (time.process_time() - c) / threads / reps)
        wall[n], cpu[n] = 2 * n**3 / best_w / 1e9, 2 * n**3 / best_c / 1e9
    return {"wall": wall, "cpu": cpu}


def rollout_batch(cfg: Any, tokenizer: Any, vocab: int) -> list[PromptGroup]:
    tasks = build_tasks(cfg.data.tasks)
    mixture = TaskMixture(
        [MixtureEntry(s.name, s.weight, tasks[s.name]) for s in cfg.data.tasks], cfg.seed
    )
    examples = mixture.draw(cfg.rollout.prompts_per_step, 0)
    gen = torch.Generator().manual_seed(0)
    r, n = cfg.rollout.max_new_tokens, cfg.rollout.n
    groups = []
    for ex, ids in zip(examples, encode_prompts(tokenizer, examples), strict=True):
        toks = torch.randint(0, vocab, (n, r), generator=gen).tolist()
        samples = [Sample(tuple(t), (-1.0,) * r, "", "length") for t in toks]
        scores = [Score(float(i % 2)) for i in range(n)]  # half right: every row has advantage
        groups.append(PromptGroup(ex, ids, samples, scores))
    return groups


def before_response_logprobs(
    model: Any,
    batch: Any,
    temperature: float,
    bf16: bool,
    with_entropy: bool = False,
    compile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``prorl.policy.response_logprobs`` as it was at 231f562, for the ``before`` variant."""
    from prorl.policy import autocast
    from prorl.rl import chunked_entropy, selective_log_softmax

    p_w = batch.prompt_width
    with autocast(bf16):
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).logits  # [B, P+R, V]
    logits = logits[:, p_w - 1 : -1]
    logprobs = selective_log_softmax(logits, batch.response_ids, temperature=temperature)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = chunked_entropy(logits.detach(), temperature=temperature)
    return logprobs, entropy


def learner_seconds(
    cfg: Any, policy: Any, ref: Any, tokenizer: Any, groups: list[PromptGroup]
) -> tuple[float, float]:
    """Wall seconds and CPU seconds / threads of one ``update_policy`` over ``groups``."""
    optimizer, scheduler = make_optimizer(cfg, policy)
    state = TrainState(cfg, policy, tokenizer, ref, optimizer, scheduler, None, None, None)  # type: ignore[arg-type]
    rewards = torch.tensor([r for g in groups for r in g.rewards])
    adv = (rewards - 0.5) * 2
    t, c = time.perf_counter(), time.process_time()
    update_policy(state, RolloutBatch.from_groups(groups, adv))
    return time.perf_counter() - t, (time.process_time() - c) / torch.get_num_threads()


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")


def gemm_share(
    cfg: Any, policy: Any, ref: Any, tokenizer: Any, groups: list[PromptGroup]
) -> dict[str, float]:
    """One update under torch.profiler: seconds in matrix multiplies (the FLOPs counted)
    against all operators' self time. The rest is the memory-bound work around them (casts,
    norms, activations, softmax, log-softmax over the vocabulary, AdamW). The profiler adds
    a little per operator, so the GEMM share is slightly understated."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learner_seconds(cfg, policy, ref, tokenizer, groups)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS) / 1e6
    return {"gemm_s": gemm, "ops_s": total, "gemm_share": gemm / total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu-smollm2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--variant", action="append", help='config overrides, e.g. "algo.micro_batch_size=16"'
    )
    ap.add_argument(
        "--profile", action="store_true", help="one more profiled update per variant: GEMM share"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "learner.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variant or [""]
    cfgs = {v: load_config(args.preset, [o for o in v.split() if o != "before"]) for v in variants}
    base = cfgs[variants[0]]
    policy, tokenizer = load_policy(base.model.name, base.model.dtype)
    init = {k: v.clone() for k, v in policy.state_dict().items()}
    ref = frozen_copy(policy)
    params = sum(p.numel() for p in policy.parameters())
    groups = rollout_batch(base, tokenizer, policy.config.vocab_size)
    real_tokens = sum(len(g.prompt_ids) + len(s.token_ids) for g in groups for s in g.samples)
    resp_tokens = sum(len(s.token_ids) for g in groups for s in g.samples)

    head = policy.get_output_embeddings().weight.numel()  # tied: also the embedding table
    # FLOPs the update needs: the body (all params but the embedding/LM head) on every real
    # token, the LM head only on response positions (prorl computes no other logits); x3 for
    # forward + backward, plus one forward of the frozen reference when the KL term is on.
    needed = 2 * ((params - head) * real_tokens + head * resp_tokens)
    usual = 2 * params * real_tokens  # the common 6 x N x tokens count's forward part

    peaks: dict[str, list[float]] = {"wall": [], "cpu": []}
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    now = update_mod.response_logprobs

    def run(v: str, measure: Any) -> Any:
        """``measure`` one update of variant ``v``, from the same starting weights."""
        policy.load_state_dict(init)
        update_mod.response_logprobs = before_response_logprobs if "before" in v.split() else now
        try:
            return measure(cfgs[v], policy, ref, tokenizer, groups)
        finally:
            update_mod.response_logprobs = now

    # per variant: a compiled one builds its graphs here (minutes)
    warmup = {v or "default": run(v, learner_seconds) for v in variants}
    for _ in range(args.repeats):  # interleaved: the machine is shared, load drifts
        pk = matmul_peak()
        for k in peaks:
            peaks[k].append(max(pk[k].values()))
        for v in variants:
            times[v].append(run(v, learner_seconds))
    peak = {k: statistics.median(x) for k, x in peaks.items()}
    fp32 = max(matmul_peak(dtype=torch.float32)["cpu"].values())
    print(
        f"bf16 matmul peak {peak['wall']:.0f} GFLOP/s per wall second, {peak['cpu']:.0f} per "
        f"CPU second ({args.threads} threads; fp32 {fp32:.0f}); load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"batch: {len(groups)} prompts x {base.rollout.n}, {real_tokens} real tokens "
        f"({resp_tokens} response), {params / 1e6:.1f}M params ({head / 1e6:.1f}M LM head)"
    )
    rows = {}
    for v in variants:
        wall = statistics.median(t for t, _ in times[v])
        cpu = statistics.median(c for _, c in times[v])
        passes = 3 + (1 if cfgs[v].algo.kl_coef > 0 else 0)  # fwd+bwd = 3 forwards, + ref
        flop, flop_usual = passes * needed, passes * usual
        r = {
            "update_wall_s": wall,
            "update_cpu_s_per_thread": cpu,
            "runs": times[v],
            "tokens_per_s": real_tokens / wall,
            "response_tokens_per_s": resp_tokens / wall,
            "gflop_needed": flop / 1e9,
            "gflop_6N": flop_usual / 1e9,
            "fraction_of_peak_wall": flop / wall / 1e9 / peak["wall"],
            "fraction_of_peak_cpu": flop / cpu / 1e9 / peak["cpu"],
            "fraction_of_peak_cpu_6N": flop_usual / cpu / 1e9 / peak["cpu"],
        }
        r["warmup_wall_s_cpu_s"] = warmup[v or "default"]
        rows[v or "default"] = r
        print(
            f"  {v or 'default':28s} update {wall:6.1f}s wall {cpu:6.1f}s CPU/thread  "
            f"{r['tokens_per_s']:5.0f} tok/s  {100 * r['fraction_of_peak_wall']:4.1f}% of peak "
            f"(wall), {100 * r['fraction_of_peak_cpu']:4.1f}% (CPU time; "
            f"{100 * r['fraction_of_peak_cpu_6N']:4.1f}% counting 6N per token)"
        )
    if args.profile:
        for v in variants:
            share = run(v, gemm_share)
            row = rows[v or "default"]
            # The profiler times operators in wall seconds, which other load stretches: take
            # only the GEMMs' share from it and apply it to the timed CPU seconds.
            gemm_cpu_s = share["gemm_share"] * row["update_cpu_s_per_thread"]
            rate = row["gflop_needed"] / gemm_cpu_s
            row["profile"] = {**share, "gemm_cpu_s": gemm_cpu_s, "gemm_gflops_cpu": rate}
            print(
                f"  {v or 'default':28s} profiled: GEMMs {100 * share['gemm_share']:4.1f}% of op "
                f"time, at {rate:.0f} GFLOP/s per CPU second = {100 * rate / peak['cpu']:.0f}% "
                "of peak: the ceiling if everything around them cost nothing"
            )
    result = {
        "preset": args.preset,
        "threads": args.threads,
        "fast_bf16_cpu": cpu_has_fast_bf16(),
        "bf16_peak_gflops": peak,
        "bf16_peak_runs": peaks,
        "fp32_peak_gflops": fp32,
        "params": params,
        "real_tokens": real_tokens,
        "response_tokens": resp_tokens,
        "variants": rows,
        "load_avg": os.getloadavg(),
        "command": "bench/bench_learner.py " + " ".join(sys.argv[1:]),
        "git": _git(),
    }
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def _git() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
