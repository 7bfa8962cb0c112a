"""Learner group cost: two DDP ranks vs two FSDP2 ranks on the same Ray run.

    .venv/bin/python bench/bench_fsdp.py [--steps 4] [--preset debug]

Needs the ray extra. Runs the preset with 2 rollout actors and 2 learner ranks under
``scale.learner_strategy=ddp`` and ``=fsdp2`` (same seeds: the same samples), and reports
from metrics.jsonl the mean ``time/update_s`` (the update plus shipping the new weights
to the rollout actors; FSDP2 adds the all-gathers of every forward and the gather of the
whole policy for shipping) and ``time/step_s`` over the steps after the first (that each
FSDP2 rank holds half the parameters is tested in tests/test_fsdp.py). Writes bench/results/fsdp.json. Measured, not asserted: on a shared 2-core
machine the times are noisy, and gloo on CPU says nothing of NCCL on GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from prorl.config import load_config
from prorl.models import load_policy
from prorl.runtime import run_training


def run(strategy: str, preset: str, steps: int, root: Path) -> dict[str, Any]:
    run_dir = root / strategy
    cfg = load_config(
        preset,
        [
            f"run_dir={run_dir}",
            f"steps={steps}",
            "checkpoint.every=0",
            "data.val_problems=0",
            "scale.backend=ray",
            "scale.rollout_workers=2",
            "scale.learner_procs=2",
            "scale.verifier_workers=1",
            "scale.cpus_per_worker=1",
            f"scale.learner_strategy={strategy}",
        ],
    )
    run_training(cfg, live=False)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time/update_s" in r][1:]  # the first step warms up
    return {
        "update_s": statistics.mean(r["time/update_s"] for r in rows),
        "step_s": statistics.mean(r["time/step_s"] for r in rows),
        "steps_timed": len(rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--preset", default="debug")
    args = ap.parse_args()
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    model, _ = load_policy(load_config(args.preset, []).model.name)
    params = sum(p.numel() for p in model.parameters())
    root = Path(tempfile.mkdtemp(prefix="bench-fsdp-"))
    out: dict[str, Any] = {
        "preset": args.preset,
        "steps": args.steps,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "parameters": params,
    }
    for strategy in ("ddp", "fsdp2"):
        out[strategy] = run(strategy, args.preset, args.steps, root)
        print(strategy, out[strategy], flush=True)
    out["update_ratio_fsdp2_over_ddp"] = out["fsdp2"]["update_s"] / out["ddp"]["update_s"]
    out["step_ratio_fsdp2_over_ddp"] = out["fsdp2"]["step_s"] / out["ddp"]["step_s"]
    print(json.dumps(out, indent=2))
    dest = Path(__file__).parent / "results" / "fsdp.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
