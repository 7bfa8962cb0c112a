"""Asynchronous rollouts against the synchronous loop, at the default job's size.

    .venv/bin/python bench/bench_async.py [--steps 6] [--repeats 1] [--lag 1] [overrides...]

Trains the cpu-smollm2 preset (the default job: SmolLM2-135M, 4 prompts x 8 samples, 64
tokens, one torch thread) for ``--steps`` steps synchronously, then with
``rollout.max_staleness=--lag``, alternating ``--repeats`` times, in this one process;
validation is off so only RL steps are timed. Step 1 of each run is a warm-up (an async run
has nothing drawn ahead yet) and is left out.

Reports, per mode, the median step time and the ratio async / sync. Beside it, the ideal
from the synchronous steps: a step is rollout work R (generate + score) and trainer work T
(the rest: update, bookkeeping), and perfect overlap would take max(R, T) instead of R + T,
so the ideal ratio is median(max(R, T) / (R + T)). Writes bench/results/async.json.
Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prorl.config import load_config
from prorl.metrics import read_jsonl
from prorl.runtime import run_training


def train(preset: str, steps: int, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    cfg = load_config(
        preset,
        [
            f"steps={steps}",
            "data.val_problems=0",
            "tensorboard=false",
            "checkpoint.every=0",
            f"run_dir={run_dir}",
            *overrides,
        ],
    )
    t = time.monotonic()
    run_training(cfg, live=False)
    wall = time.monotonic() - t
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "time/step_s" in r][1:]
    return {"rows": rows, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu-smollm2")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--lag", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "async.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    # the same correction in both modes, so they differ only in the overlap
    common = ["algo.truncated_is=true", *args.overrides]
    modes = {"sync": common, "async": [*common, f"rollout.max_staleness={args.lag}"]}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            order = list(modes) if rep % 2 == 0 else list(modes)[::-1]
            for mode in order:
                run = train(args.preset, args.steps, modes[mode], Path(tmp) / f"{mode}-{rep}")
                runs[mode].append(run)
                loads.append(os.getloadavg()[0])
                steps = [r["time/step_s"] for r in run["rows"]]
                print(f"{mode:5s} run {rep}: steps {[round(s, 1) for s in steps]} s", flush=True)

    def steps_of(mode: str, key: str) -> list[float]:
        return [r.get(key, 0.0) for run in runs[mode] for r in run["rows"]]

    sync_step = statistics.median(steps_of("sync", "time/step_s"))
    async_step = statistics.median(steps_of("async", "time/step_s"))
    rollout = [
        g + s
        for g, s in zip(
            steps_of("sync", "time/generate_s"), steps_of("sync", "time/score_s"), strict=True
        )
    ]
    trainer = [t - r for t, r in zip(steps_of("sync", "time/step_s"), rollout, strict=True)]
    ideal = statistics.median(max(r, t) / (r + t) for r, t in zip(rollout, trainer, strict=True))
    wait = statistics.median(steps_of("async", "time/wait_rollouts_s"))
    out = {
        "command": "bench/bench_async.py " + " ".join(sys.argv[1:]),
        "preset": args.preset,
        "lag": args.lag,
        "steps_per_run": args.steps,
        "repeats": args.repeats,
        "sync_step_s": sync_step,
        "async_step_s": async_step,
        "ratio_async_over_sync": async_step / sync_step,
        "ideal_ratio": ideal,
        "sync_rollout_s": statistics.median(rollout),
        "sync_trainer_s": statistics.median(trainer),
        "async_wait_s": wait,
        "sync_steps_s": steps_of("sync", "time/step_s"),
        "async_steps_s": steps_of("async", "time/step_s"),
        "load_avg_1min": loads,
    }
    print(
        f"\nstep time (median over {len(out['sync_steps_s'])} steps each): sync {sync_step:.1f} s, "
        f"async (lag {args.lag}) {async_step:.1f} s -> ratio {async_step / sync_step:.2f}\n"
        f"synchronous step = rollouts {out['sync_rollout_s']:.1f} s + trainer "
        f"{out['sync_trainer_s']:.1f} s: ideal ratio max/sum {ideal:.2f}; "
        f"async trainer waited {wait:.1f} s per step for rollouts"
    )
    path = Path(args.out)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
