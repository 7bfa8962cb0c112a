"""Sandbox cost: per-execution overhead and test cases per second, against plain subprocess.

    .venv/bin/python bench/bench_sandbox.py [--runs 40] [--repeat 3]

Overhead = sandbox start to verdict for a trivial program, minus the same program run by a
plain ``subprocess.run`` with no isolation (same interpreter, same flags). Throughput runs
every stdin/stdout case of code-basic's reference solutions, concurrently on all cores.
Writes bench/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prorl import sandbox
from prorl.tasks import get_task


def _plain(program: str, stdin: str, python: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "main.py")
        Path(path).write_text(program)
        out = subprocess.run(
            [python, "-I", "-S", path], input=stdin, capture_output=True, text=True
        )
        return out.stdout


def _times(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm-up (and the sandbox's one-time probe)
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _stdio_jobs(repeat: int) -> list[tuple[str, str]]:
    task = get_task("code-basic")
    jobs = []
    for split in ("train", "val"):
        for i in range(task.size(split) or 0):
            ex = task.example(i, split)
            tests = ex.meta["tests"]
            if "fn_name" not in tests and "inputs" in tests:
                jobs += [(ex.meta["reference"], stdin) for stdin in tests["inputs"]]
    return jobs * repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    iso = sandbox.active_isolation()
    python = iso.python
    res: dict[str, object] = {"layers": list(iso.layers), "python": python, "cpus": os.cpu_count()}
    trivial = {
        "sandbox_python_ms": _times(lambda: sandbox.run("pass"), args.runs),
        "plain_python_ms": _times(lambda: _plain("pass", "", python), args.runs),
        "sandbox_true_ms": _times(lambda: sandbox.run("", interpreter=["/bin/true"]), args.runs),
        "plain_true_ms": _times(lambda: subprocess.run(["/bin/true"]), args.runs),
    }
    for key, values in trivial.items():
        res[key] = {"median": statistics.median(values), "mean": statistics.fmean(values)}
    res["overhead_ms"] = res["sandbox_python_ms"]["median"] - res["plain_python_ms"]["median"]  # type: ignore[index]

    jobs = _stdio_jobs(args.repeat)
    workers = os.cpu_count() or 1
    start = time.perf_counter()
    verdicts = sandbox.run_many([sandbox.Job(p, stdin=s) for p, s in jobs], max_workers=workers)
    sb_s = time.perf_counter() - start
    assert all(v.ok for v in verdicts), [v for v in verdicts if not v.ok][:2]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda j: _plain(j[0], j[1], python), jobs))
    plain_s = time.perf_counter() - start
    res["batch"] = {
        "cases": len(jobs),
        "workers": workers,
        "sandbox_cases_per_s": len(jobs) / sb_s,
        "plain_cases_per_s": len(jobs) / plain_s,
    }
    res["machine"] = f"{platform.machine()} {platform.release()}, load {os.getloadavg()[0]:.1f}"
    print(f"layers: {', '.join(iso.layers)}  ({python})")
    print(f"{'trivial program':<26}{'median ms':>10}{'mean ms':>10}")
    for key in trivial:
        stats = res[key]
        print(f"{key:<26}{stats['median']:>10.1f}{stats['mean']:>10.1f}")  # type: ignore[index]
    print(f"overhead (median, python): {res['overhead_ms']:.1f} ms per execution")
    b = res["batch"]
    print(
        f"batch of {b['cases']} stdio cases on {workers} workers: "  # type: ignore[index]
        f"sandbox {b['sandbox_cases_per_s']:.1f}/s, plain {b['plain_cases_per_s']:.1f}/s"
    )  # type: ignore[index]
    out = Path(__file__).parent / "results" / "sandbox.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
