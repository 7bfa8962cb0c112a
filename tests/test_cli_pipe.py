"""A command whose reader goes away (`prorl presets | head`) stops quietly with status 1,
whether it prints plainly (presets) or through rich (tasks), with no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", ["presets", "tasks"])
def test_closed_stdout_stops_quietly(command: str) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "prorl.cli", command],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
