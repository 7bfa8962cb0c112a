"""Where the HF sampler's decode time goes: one ``generate`` call of the default job's shape
(cpu-smollm2: 4 prompts x 8 samples, 64 new tokens, temperature 0.8) under torch.profiler.

    OMP_NUM_THREADS=1 .venv/bin/python bench/profile_generate.py [--threads 1]

Prints tokens per CPU second and the operators by self time, and writes the table to
bench/results/profile_generate.json. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench_learner import rollout_batch
from prorl.config import load_config
from prorl.models import load_policy
from prorl.sampling.hf import HFSampler
from prorl.types import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "profile_generate.json")
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("cpu-smollm2", [])
    policy, tok = load_policy(cfg.model.name, cfg.model.dtype)
    prompts = [g.prompt_ids for g in rollout_batch(cfg, tok, policy.config.vocab_size)]
    sampler = HFSampler(policy, tok, batch_size=cfg.rollout.batch_size, bf16=cfg.rollout.bf16)
    params = SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_new_tokens)
    n = cfg.rollout.n
    sampler.generate(prompts[:1], n, SamplingParams(params.temperature, 1.0, 4), 0)  # warm-up
    cpu = time.process_time()
    out = sampler.generate(prompts, n, params, 1)
    cpu = (time.process_time() - cpu) / args.threads
    tokens = sum(len(s.token_ids) for group in out for s in group)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sampler.generate(prompts, n, params, 1)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    top = [
        {"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:15]
    ]
    print(f"{tokens} tokens in {cpu:.1f} CPU s per thread: {tokens / cpu:.0f} tokens/s")
    for row in top:
        print(f"  {row['op']:55s} {100 * row['share']:5.1f}%  {row['calls']:6d} calls")
    result = {
        "tokens": tokens,
        "cpu_s_per_thread": cpu,
        "tokens_per_cpu_s": tokens / cpu,
        "top_ops": top,
        "threads": args.threads,
        "load_avg": os.getloadavg(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
