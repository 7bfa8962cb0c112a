"""Step-time split of the default job (sampling, scoring, update) and tokens per second.

    .venv/bin/python bench/bench_step.py [--steps 3] [--preset cpu-smollm2] [key=value ...]

Runs a few training steps of the preset without validation, then prints each phase's share
of the step time and writes bench/results/step.json. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from prorl.config import load_config
from prorl.metrics import read_jsonl
from prorl.runtime import run_training

PHASES = ("time/generate_s", "time/score_s", "time/update_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--preset", default="cpu-smollm2")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            args.preset,
            [
                f"steps={args.steps}",
                f"run_dir={tmp}/run",
                "data.val_problems=0",
                "tensorboard=false",
                *args.overrides,
            ],
        )
        t0 = time.monotonic()
        run_training(cfg, live=False)
        wall = time.monotonic() - t0
        rows = [r for r in read_jsonl(Path(tmp) / "run" / "metrics.jsonl") if "time/step_s" in r]
    # The first step pays one-off costs (verifier worker start); report the rest when possible.
    timed = rows[1:] if len(rows) > 1 else rows
    step_s = statistics.mean(r["time/step_s"] for r in timed)
    result = {
        "preset": args.preset,
        "overrides": args.overrides,
        "steps_timed": len(timed),
        "step_s": step_s,
        "phases_s": {p: statistics.mean(r.get(p, 0.0) for r in timed) for p in PHASES},
        "gen_tokens_per_s": statistics.mean(r["perf/gen_tokens_per_s"] for r in timed),
        "step_tokens_per_s": statistics.mean(r["perf/tokens_per_s"] for r in timed),
        "wall_s": wall,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(f"step time {step_s:.1f}s over {len(timed)} steps ({args.preset})")
    for phase, value in result["phases_s"].items():
        print(f"  {phase:18s} {value:7.1f}s  {100 * value / step_s:5.1f}% of the step")
    print(
        f"  generation {result['gen_tokens_per_s']:.0f} tok/s; whole step {result['step_tokens_per_s']:.0f} tok/s"
    )
    out = Path(__file__).parent / "results" / "step.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
