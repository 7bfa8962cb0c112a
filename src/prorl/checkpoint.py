"""Run directory layout and checkpoints.

``RUN_DIR/checkpoints/step_00000010/`` holds ``policy/`` (a plain HF folder) and, written
last, the ``COMPLETE`` marker: a directory without it is an interrupted save and is ignored.
"""

from __future__ import annotations

from pathlib import Path

MARKER = "COMPLETE"


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [d for d in root.glob("step_*") if d.is_dir() and (d / MARKER).is_file()]
    return sorted(found, key=lambda d: int(d.name.split("_")[1]))


def latest_policy_dir(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] / "policy" if dirs else None
