"""Cost growth: RL step time as the response length and the samples per prompt double.

    .venv/bin/python bench/bench_growth.py [--lengths 32 64 128] [--ns 4 8 16] [--repeats 2]

One process, one model: the cpu-smollm2 preset's training state is built once, then whole
RL steps (``prorl.train.rl_step``: generate, score, update) run with ``max_new_tokens`` set
to each of ``--lengths`` (at the preset's n) and ``n`` set to each of ``--ns`` (at the preset's
max_new_tokens). Points are interleaved and repeated (the machine is shared; load drifts);
the first step is a warm-up. Dynamic sampling is off, so every step generates and trains on
prompts_per_step x n samples; ``rollout.batch_size`` is raised to hold the largest batch in
one decode call, so the n sweep measures batching, not extra calls. Responses that end
before the cap make the generated tokens grow slower than the cap: both are reported.
Writes bench/results/growth.json. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from prorl.config import load_config
from prorl.mixture import MixtureEntry, TaskMixture
from prorl.models import load_policy
from prorl.runtime import RunScorer, pool_target
from prorl.sampling.factory import make_sampler
from prorl.scoring import VerifierPool
from prorl.state import TrainState, frozen_copy, make_optimizer
from prorl.tasks import build_tasks
from prorl.train import rl_step, seed_everything


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu-smollm2")
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--ns", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "growth.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_config(args.preset, ["rollout.dynamic_sampling=false", *args.overrides])
    ro = base.rollout
    rows = ro.prompts_per_step * max(args.ns)
    axes = {
        "max_new_tokens": [(r, ro.n) for r in args.lengths],
        "n": [(ro.max_new_tokens, n) for n in args.ns],
    }
    points = list(dict.fromkeys(axes["max_new_tokens"] + axes["n"]))  # (length, n), once each
    cfgs = {
        (r, n): dataclasses.replace(
            base, rollout=dataclasses.replace(ro, max_new_tokens=r, n=n, batch_size=rows)
        )
        for r, n in points
    }
    results: dict[tuple[int, int], list[dict[str, float]]] = {p: [] for p in points}
    loads = []
    with _State(cfgs[points[0]]) as state:
        state.cfg = cfgs[points[0]]
        rl_step(state)  # warm-up: verifier worker start, first-call allocations
        for rep in range(args.repeats):
            for p in points if rep % 2 == 0 else points[::-1]:
                state.cfg = cfgs[p]
                c = time.process_time()  # robust to other load; the verifier worker not counted
                m = rl_step(state)
                m["cpu_s"] = (time.process_time() - c) / args.threads
                loads.append(os.getloadavg()[0])
                results[p].append(m)
                print(
                    f"max_new_tokens={p[0]:4d} n={p[1]:3d}: step "
                    f"{m['time/step_s']:6.1f}s wall, {m['cpu_s']:6.1f}s CPU/thread (gen {m['time/generate_s']:5.1f}s, update "
                    f"{m.get('time/update_s', 0):5.1f}s), mean response "
                    f"{m['response/length_mean']:.0f} tokens",
                    flush=True,
                )
    out: dict[str, Any] = {
        "command": "bench/bench_growth.py " + " ".join(sys.argv[1:]),
        "preset": args.preset,
        "threads": args.threads,
        "prompts_per_step": ro.prompts_per_step,
        "batch_size": rows,
        "load_avg_1min": loads,
        "points": [],
    }
    for axis in ("max_new_tokens", "n"):
        print(f"\ngrowth with {axis}:")
        prev = None
        for p in axes[axis]:
            ms = results[p]
            step = statistics.median(m["time/step_s"] for m in ms)
            cpu = statistics.median(m["cpu_s"] for m in ms)
            tokens = statistics.median(
                m["response/length_mean"] * ro.prompts_per_step * p[1] for m in ms
            )
            row = {
                "axis": axis,
                "max_new_tokens": p[0],
                "n": p[1],
                "step_s": step,
                "cpu_s": cpu,
                "generate_s": statistics.median(m["time/generate_s"] for m in ms),
                "score_s": statistics.median(m["time/score_s"] for m in ms),
                "update_s": statistics.median(m.get("time/update_s", 0.0) for m in ms),
                "gen_tokens": tokens,
                "truncated_frac": statistics.median(m["response/truncated_frac"] for m in ms),
                "step_s_all": [m["time/step_s"] for m in ms],
                "cpu_s_all": [m["cpu_s"] for m in ms],
            }
            out["points"].append(row)
            grow = (
                f"  x{step / prev['step_s']:.2f} wall, x{cpu / prev['cpu_s']:.2f} CPU, "
                f"x{tokens / prev['gen_tokens']:.2f} tokens"
                if prev
                else ""
            )
            print(
                f"  {axis}={p[0] if axis == 'max_new_tokens' else p[1]:4d}: step {step:6.1f}s "
                f"wall {cpu:6.1f}s CPU/thread "
                f"(generate {row['generate_s']:5.1f}s, update {row['update_s']:5.1f}s), "
                f"{tokens:5.0f} tokens generated{grow}"
            )
            prev = row
    print(f"load average (1 min) during the steps: {[round(x, 1) for x in loads]}")
    path = Path(args.out)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


class _State:
    """The training state of ``run_training``, without its run directory and loop."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def __enter__(self) -> TrainState:
        cfg = self.cfg
        tasks = build_tasks(cfg.data.tasks)
        policy, tokenizer = load_policy(cfg.model.name, cfg.model.dtype)
        seed_everything(cfg.seed)
        ref = frozen_copy(policy) if cfg.algo.kl_coef > 0 else None
        optimizer, scheduler = make_optimizer(cfg, policy)
        targets = {s.name: pool_target(s, tasks[s.name]) for s in cfg.data.tasks}
        mixture = TaskMixture(
            [MixtureEntry(s.name, s.weight, tasks[s.name]) for s in cfg.data.tasks], cfg.seed
        )
        self.pool = VerifierPool(cfg.verify.workers, cfg.verify.timeout_s)
        pool = self.pool.__enter__()
        return TrainState(
            cfg,
            policy,
            tokenizer,
            ref,
            optimizer,
            scheduler,
            make_sampler(cfg, policy, tokenizer),
            RunScorer(pool, targets),
            mixture,
        )

    def __exit__(self, *exc: Any) -> None:
        self.pool.__exit__(*exc)


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"total {time.monotonic() - t0:.0f}s")
