"""Metric sinks: ``metrics.jsonl`` (one flat dict per step), ``events.jsonl``, TensorBoard and,
optionally, Weights & Biases (:class:`WandbLogger`, attached with :meth:`MetricsWriter.attach`).

Lines are flushed and fsynced as they are written so a killed run loses at most the line
being written; readers skip a torn last line.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal, Protocol, cast


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not Path(path).is_file():
        return rows
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a killed writer
    return rows


class Sink(Protocol):
    """A mirror of what :class:`MetricsWriter` writes (e.g. :class:`WandbLogger`)."""

    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def event(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MetricsWriter:
    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.events_path = self.run_dir / "events.jsonl"
        self._tb: Any = None
        self._sinks: list[Sink] = []
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def attach(self, sink: Sink) -> None:
        """Mirror every later ``log`` and ``event`` to ``sink``; ``close`` closes it."""
        self._sinks.append(sink)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, {"step": step, **metrics})
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        for sink in self._sinks:
            sink.log(step, metrics)

    def event(self, step: int, kind: str, **fields: Any) -> dict[str, Any]:
        row = {"step": step, "event": kind, "time": time.time(), **fields}
        append_jsonl(self.events_path, row)
        for sink in self._sinks:
            sink.event(row)
        return row

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        for sink in self._sinks:
            sink.close()
        self._sinks = []


class WandbLogger:
    """A Weights & Biases run mirroring ``metrics.jsonl`` and ``events.jsonl`` (``logging.wandb``).

    Every ``metrics.jsonl`` row is logged with the same keys at the same step. Each event puts
    ``events/<kind> = 1`` at its step (a marker on the charts); all events of the run directory
    (``events.jsonl``, so also those written before this run started, e.g. ``resume``) go to the
    table ``events_table`` when the run closes. ``wandb`` is imported here only: the package is
    an optional extra (``prorl[wandb]``), checked when the config is built.
    """

    def __init__(self, run: Any, events_path: Path) -> None:
        self.run = run
        self.events_path = Path(events_path)
        self._last_step = -1  # wandb drops (with a warning) rows logged to an earlier step

    @classmethod
    def start(
        cls,
        run_dir: Path,
        config: dict[str, Any],
        mode: str = "offline",
        project: str = "prorl",
        name: str = "",
        entity: str = "",
        directory: str = "",
    ) -> WandbLogger:
        """Start a W&B run for the prorl run in ``run_dir`` with its resolved ``config``.

        ``directory`` (else ``$WANDB_DIR``, else ``run_dir``) receives ``wandb/``; offline
        runs stay there until ``wandb sync``. A resumed prorl run starts a new W&B run in the
        same group (the run's name): W&B keeps a run's steps increasing, while a resume
        rewinds to its checkpoint and logs those steps again."""
        import wandb

        if mode not in ("offline", "online"):
            raise ValueError(f"wandb mode must be offline or online, got {mode!r}")
        run_dir = Path(run_dir)
        where = Path(directory or os.environ.get("WANDB_DIR") or run_dir)
        where.mkdir(parents=True, exist_ok=True)
        label = name or run_dir.resolve().name
        run = wandb.init(
            project=project,
            entity=entity or None,
            name=label,
            group=label,
            dir=str(where),
            mode=cast(Literal["offline", "online"], mode),
            config=config,
            # the terminal belongs to prorl's live display; the metrics are what is logged
            settings=wandb.Settings(console="off"),
        )
        return cls(run, run_dir / "events.jsonl")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log(dict(metrics), step=step)
        self._last_step = max(self._last_step, step)

    def event(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        if step >= self._last_step:  # an earlier step's marker would be dropped by wandb
            self.run.log({f"events/{row['event']}": 1.0}, step=step)
            self._last_step = step

    def close(self) -> None:
        import wandb

        rows = read_jsonl(self.events_path)
        if rows:
            columns: list[str | int] = ["step", "event", "time", "fields"]
            data = [
                [
                    int(r.get("step", 0)),
                    str(r.get("event", "")),
                    float(r.get("time") or 0.0),
                    json.dumps({k: v for k, v in r.items() if k not in ("step", "event", "time")}),
                ]
                for r in rows
            ]
            # logged beside the last step's row, which it then belongs to (wandb needs a step)
            table = wandb.Table(columns=columns, data=data)
            self.run.log({"events_table": table}, step=max(self._last_step, 0))
        self.run.finish()
