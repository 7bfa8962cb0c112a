"""Regression: a large host process (a trainer holding a model) must not make every failing
program look like a memory-limit failure (Linux counts the forked copy in ru_maxrss)."""

import subprocess
import sys

PROGRAM = """
import numpy as np
big = np.ones(120_000_000)  # ~1 GB resident in the host, above the 512 MB sandbox limit
from prorl.sandbox import run
print(run("raise SystemExit(3)").status, run("x = bytearray(10**11)").status)
"""


def test_big_host_does_not_turn_failures_into_memory():
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["RUNTIME_ERROR", "MEMORY"]
