"""Data-parallel learners under ``torchrun`` without Ray (``-m slow``): two gloo ranks, each
sampling its share of the prompts with its own HF sampler, train the debug preset through
the real CLI and reproduce the single-process run's rewards and parameters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prorl.metrics import read_jsonl
from ray_runs import assert_close, policy_params

pytestmark = pytest.mark.slow
ARGS = ["--preset", "debug", "steps=2", "checkpoint.every=1", "verify.workers=1"]


def _cli(launcher: list[str], run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launcher, "-m", "prorl.cli", "train", "--run-dir", str(run_dir), *ARGS],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_two_torchrun_ranks_match_one_process(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    proc = _cli([sys.executable], one)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    proc = _cli(torchrun, two)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("held-out success rate") == 1  # rank 0 alone reports
    assert proc.stdout.count("[step_000000] toy-even") == 1  # and shows validation progress
    rows = {r["step"]: r for r in read_jsonl(two / "metrics.jsonl")}
    ref = {r["step"]: r for r in read_jsonl(one / "metrics.jsonl")}
    assert sorted(rows) == sorted(ref) == [0, 1, 2]
    for step in (1, 2):  # the same samples scored the same, and one set of metrics
        for key in ("train/reward", "train/reward/toy-even", "response/length_mean"):
            assert rows[step][key] == ref[step][key], (step, key)
    assert rows[2]["policy/kl"] == pytest.approx(ref[2]["policy/kl"], rel=1e-3, abs=1e-9)
    assert_close(policy_params(two, 2), policy_params(one, 2), 1e-5)


def test_first_validation_stopped_in_one_process_resumes_on_two_ranks(tmp_path: Path) -> None:
    """A run stopped by SIGTERM during its first validation, resumed as two torchrun ranks.
    Rank 1 writes into a scratch directory: it must skip exactly the problems rank 0 had
    stored, or the ranks' sampler calls (collectives) fall out of step and the run crashes
    or hangs. Every problem ends up stored once, the stored ones untouched."""
    import json

    from test_checkpoint_signals import stop_in_first_validation

    run = tmp_path / "run"
    before = stop_in_first_validation(run, tmp_path, 100)
    results = run / "eval" / "results" / "step_000000" / "rg__leg_counting.jsonl"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    res = subprocess.run(
        [*torchrun, "-m", "prorl.cli", "train", "--resume", str(run), "steps=1"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    after = results.read_text().splitlines()
    assert after[: len(before)] == before
    assert sorted(json.loads(line)["index"] for line in after) == list(range(100))
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1]
