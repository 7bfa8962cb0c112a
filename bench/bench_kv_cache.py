"""The HF sampler's reserved KV cache against transformers' DynamicCache, A/B in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_kv_cache.py [--repeats 3] [--tokens 64 256]

The default job's shape (cpu-smollm2: 4 prompts x 8 samples, temperature 0.8) at each
response cap in ``--tokens``; the two caches alternate, so load drifts hit both alike. Prints
CPU seconds per call, tokens per CPU second and the speed-up (DynamicCache / reserved), checks
that both draw the same tokens, and writes bench/results/kv_cache.json. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from statistics import median

import torch

from bench_learner import rollout_batch
from prorl.config import load_config
from prorl.models import load_policy
from prorl.sampling.hf import HFSampler
from prorl.types import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kv_cache.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config("cpu-smollm2", [])
    policy, tok = load_policy(cfg.model.name, cfg.model.dtype)
    prompts = [g.prompt_ids for g in rollout_batch(cfg, tok, policy.config.vocab_size)]
    sampler = HFSampler(policy, tok, batch_size=cfg.rollout.batch_size, bf16=cfg.rollout.bf16)
    sampler.generate(prompts[:1], 2, SamplingParams(1.0, 1.0, 4), 0)  # warm-up
    rows = []
    for max_new in args.tokens:
        params = SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, max_new)
        times: dict[bool, list[float]] = {True: [], False: []}
        drawn: dict[bool, list[tuple[int, ...]]] = {}
        for _ in range(args.repeats):
            for reserve in (True, False):
                sampler.reserve_kv = reserve
                cpu = time.process_time()
                out = sampler.generate(prompts, cfg.rollout.n, params, 1)
                times[reserve].append(time.process_time() - cpu)
                drawn[reserve] = [s.token_ids for g in out for s in g]
        tokens = sum(len(t) for t in drawn[True])
        row = {
            "max_new_tokens": max_new,
            "tokens": tokens,
            "reserved_cpu_s": median(times[True]),
            "dynamic_cpu_s": median(times[False]),
            "speedup": median(times[False]) / median(times[True]),
            "same_tokens": drawn[True] == drawn[False],
            "all_cpu_s": {"reserved": times[True], "dynamic": times[False]},
        }
        rows.append(row)
        print(
            f"{max_new:4d} new tokens ({tokens} drawn): reserved {row['reserved_cpu_s']:.2f} s "
            f"({tokens / row['reserved_cpu_s']:.0f} tok/s), DynamicCache "
            f"{row['dynamic_cpu_s']:.2f} s ({tokens / row['dynamic_cpu_s']:.0f} tok/s): "
            f"{row['speedup']:.2f}x, same tokens: {row['same_tokens']}"
        )
    result = {"rows": rows, "repeats": args.repeats, "load_avg": os.getloadavg()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
