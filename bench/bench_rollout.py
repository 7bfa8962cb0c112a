"""Rollout throughput: the HF sampler against the vLLM sampler, in one run.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_rollout.py [--prompts 4] [--n 8]
        [--max-new-tokens 64] [--temperature 0.8] [--repeats 3] [--vllm-dtype bfloat16]

Both samplers get the same prompts (drawn from the default job's task mix), samples per
prompt, response cap, temperature and batch size, and the same embedded SmolLM2-135M
weights. Each is warmed up once, then the timed calls alternate between them (so a change
in machine load hits both). Prints generated tokens per second of each and their ratio;
writes bench/results/rollout.json with the machine's load (``uptime``) before and after.
Needs the vllm extra (make setup-vllm). Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from prorl.config import load_config
from prorl.mixture import MixtureEntry, TaskMixture
from prorl.models import encode_prompts, load_policy
from prorl.policy import pack, response_logprobs
from prorl.sampling.hf import HFSampler
from prorl.sampling.vllm import VLLMSampler
from prorl.tasks import build_tasks
from prorl.types import SamplingParams


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(sampler: Any, prompts: list[list[int]], n: int, params: SamplingParams, seed: int):
    t = time.monotonic()
    out = sampler.generate(prompts, n, params, seed)
    return time.monotonic() - t, sum(len(s.token_ids) for g in out for s in g)


def logprob_mismatch(
    sampler: Any, policy: Any, tok: Any, prompts: list[list[int]], n: int, params: SamplingParams
) -> float:
    """Mean |engine - trainer| log-prob per sampled token (the trainer in fp32): what
    ProRL v2's truncated importance sampling corrects (algo.truncated_is)."""
    out = sampler.generate(prompts, n, params, 20_000)
    flat = [(p, s) for p, g in zip(prompts, out, strict=True) for s in g]
    batch = pack([p for p, _ in flat], [list(s.token_ids) for _, s in flat], tok.pad_token_id)
    with torch.no_grad():
        trainer, _ = response_logprobs(policy, batch, params.temperature, bf16=False)
    diffs = [
        (trainer[r, : len(s.logprobs)] - torch.tensor(s.logprobs)).abs()
        for r, (_, s) in enumerate(flat)
    ]
    return float(torch.cat(diffs).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu-smollm2")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vllm-dtype", default="bfloat16", help="auto: the policy's fp32")
    ap.add_argument("--out", default="rollout.json", help="file name under bench/results/")
    args = ap.parse_args()
    load_before = uptime()
    cfg = load_config(args.preset, [])
    policy, tok = load_policy(cfg.model.name, cfg.model.dtype)
    tasks = build_tasks(cfg.data.tasks)
    mixture = TaskMixture(
        [MixtureEntry(s.name, s.weight, tasks[s.name]) for s in cfg.data.tasks], cfg.seed
    )
    prompts = encode_prompts(tok, mixture.draw(args.prompts, 0, 0))
    params = SamplingParams(args.temperature, 1.0, args.max_new_tokens)
    batch = cfg.rollout.batch_size

    hf = HFSampler(policy, tok, batch_size=batch, bf16=cfg.rollout.bf16)
    t = time.monotonic()
    vllm = VLLMSampler(policy, tok, dtype=args.vllm_dtype, max_num_seqs=batch)
    engine_start_s = time.monotonic() - t
    t = time.monotonic()
    vllm.update_weights(policy)
    sync_s = time.monotonic() - t

    samplers = {"hf": hf, "vllm": vllm}
    for s in samplers.values():  # warm-up: first-call allocations, caches
        s.generate(prompts, args.n, params, 10_000)
    totals = {k: [0.0, 0] for k in samplers}
    for r in range(args.repeats):
        for name, s in samplers.items():
            secs, toks = timed(s, prompts, args.n, params, r)
            totals[name][0] += secs
            totals[name][1] += toks
            print(f"  {name:4s} call {r}: {toks} tokens in {secs:.1f}s ({toks / secs:.0f} tok/s)")
    rates = {k: toks / secs for k, (secs, toks) in totals.items()}
    mismatch = logprob_mismatch(vllm, policy, tok, prompts, args.n, params)
    ratio = rates["vllm"] / rates["hf"]
    result = {
        "command": "OMP_NUM_THREADS={} .venv/bin/python bench/bench_rollout.py {}".format(
            os.environ.get("OMP_NUM_THREADS", "unset"),
            " ".join(
                f"--{k.replace('_', '-')} {v}"
                for k, v in vars(args).items()
                if k not in ("preset", "out")
            ),
        ),
        "model": cfg.model.name,
        "prompts": args.prompts,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "batch_size": batch,
        "repeats": args.repeats,
        "hf": {"tokens_per_s": rates["hf"], "dtype": "float32", "tokens": totals["hf"][1]},
        "vllm": {
            "tokens_per_s": rates["vllm"],
            "dtype": args.vllm_dtype,
            "tokens": totals["vllm"][1],
            "engine_start_s": engine_start_s,
            "weight_sync_s": sync_s,
            "logprob_mismatch_abs_vs_trainer_fp32": mismatch,
        },
        "ratio_vllm_over_hf": ratio,
        "torch_threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": uptime(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(
        f"HF {rates['hf']:.0f} tok/s, vLLM ({args.vllm_dtype}) {rates['vllm']:.0f} tok/s: "
        f"vLLM/HF = {ratio:.2f}x; engine start {engine_start_s:.0f}s, weight sync {sync_s:.2f}s, "
        f"log-prob mismatch vs trainer {mismatch:.4f}"
    )
    out = Path(__file__).parent / "results" / args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    vllm.close()


if __name__ == "__main__":
    main()
