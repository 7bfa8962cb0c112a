"""Training health checks: thresholds on step metrics with an action (no torch).

Each ``HealthCheck`` watches one metric key; when the value is below ``min`` or above
``max`` for ``patience`` consecutive steps that report it, the ``HealthMonitor`` raises an
``Alarm`` whose action the training loop carries out: ``warn`` (an ``alarm`` event and a
display line), ``reset`` (also a reference reset) or ``stop`` (also a checkpoint, then a
clean stop). Steps that do not report the metric leave the count as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prorl.config import HealthCheck


@dataclass(frozen=True)
class Alarm:
    metric: str
    value: float
    bound: str  # e.g. "< 0.1"
    action: str
    steps: int  # consecutive steps out of bounds

    @property
    def message(self) -> str:
        run = f" for {self.steps} steps" if self.steps > 1 else ""
        return f"{self.metric} = {self.value:.4g} {self.bound}{run}"


class HealthMonitor:
    def __init__(self, checks: Sequence[HealthCheck]) -> None:
        self.checks = list(checks)
        self.counts = [0] * len(self.checks)  # consecutive out-of-bounds steps per check

    def observe(self, metrics: dict[str, Any]) -> list[Alarm]:
        """Update the counts with one step's metrics; return the checks that alarm now."""
        alarms = []
        for i, check in enumerate(self.checks):
            value = metrics.get(check.metric)
            if value is None:
                continue
            bound = _violated(check, float(value))
            self.counts[i] = self.counts[i] + 1 if bound else 0
            if bound and self.counts[i] >= check.patience:
                alarms.append(
                    Alarm(check.metric, float(value), bound, check.action, self.counts[i])
                )
        return alarms

    def state_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        counts = list(state.get("counts", []))
        if len(counts) == len(self.checks):  # checks changed on resume: start counting anew
            self.counts = counts


def _violated(check: HealthCheck, value: float) -> str | None:
    if check.min is not None and value < check.min:
        return f"< {check.min:g}"
    if check.max is not None and value > check.max:
        return f"> {check.max:g}"
    return None
