"""Progress display: a rich live panel in a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

# What one line shows, in order: (metric key, label, format)
SHOWN = (
    ("train/reward", "reward", "{:.3f}"),
    ("policy/kl", "kl", "{:.2e}"),
    ("policy/entropy", "ent", "{:.2f}"),
    ("policy/clipfrac", "clip", "{:.3f}"),
    ("filter/kept_frac", "kept", "{:.2f}"),
    ("response/length_mean", "len", "{:.0f}"),
    ("time/step_s", "s/step", "{:.1f}"),
    ("time/wait_rollouts_s", "wait", "{:.1f}"),  # asynchronous rollouts only
    ("async/staleness", "stale", "{:.0f}"),
)


def summarize(metrics: dict[str, Any]) -> str:
    parts = []
    for key, label, fmt in SHOWN:
        value = metrics.get(key)
        if isinstance(value, int | float):
            parts.append(f"{label} {fmt.format(value)}")
    return "  ".join(parts)


class Display:
    def __init__(self, total_steps: int, start_step: int = 0, live: bool | None = None) -> None:
        self.live = sys.stdout.isatty() if live is None else live
        self.console = Console(highlight=False)
        self.total = total_steps
        self._t0 = time.monotonic()
        self._progress: Progress | None = None
        self._stage = ""
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
            )
            self._task = self._progress.add_task("train", total=total_steps, info="")
            self._progress.update(self._task, completed=start_step)
            self._progress.start()

    def step(self, step: int, metrics: dict[str, Any]) -> None:
        line = summarize(metrics)
        if self._progress is not None:
            self._progress.update(self._task, completed=step + 1, info=line)
        else:
            stage = f" [{self._stage}]" if self._stage else ""
            print(f"step {step + 1}/{self.total}{stage}  {line}", flush=True)

    def progress(self, text: str) -> None:
        """Progress of work between steps (validation): beside the bar in a terminal, a plain
        line otherwise."""
        if self._progress is not None:
            self._progress.update(self._task, info=escape(text))
        else:
            print(text, flush=True)

    def set_stage(self, label: str) -> None:
        """Name the current training stage next to the progress bar."""
        if self._progress is not None:
            self._progress.update(self._task, description=escape(f"train [{label}]"))
        else:
            self._stage = label

    def message(self, text: str, style: str = "") -> None:
        if self._progress is not None:
            self._progress.console.print(text, style=style or None)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
