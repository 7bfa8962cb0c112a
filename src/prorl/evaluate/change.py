"""Did a model improve on another? Paired bootstrap intervals over problems (numpy only).

Two evaluations of the same held-out problems (a run's validation before and after
training, or a base and a trained model under ``prorl eval``) are compared problem by
problem: each bootstrap replicate resamples the problems of every task with replacement,
the same draw for both models, and takes the macro average over tasks (each task weighs
the same, as ``eval/pass@1`` does). The interval of the change is therefore much tighter
than the difference of two separate intervals would suggest, and honest about it.

Per problem, a model's value is its success rate (share of samples with reward at or above
the threshold) or, for ``lenient``, the share whose last number is the reference
(``prorl.evaluate.lenient``): comparing the trained model's strict success with the base's
lenient success tells whether training taught more than the answer format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prorl.evaluate.analysis import (
    FloatArray,
    Results,
    TaskResult,
    _interval,
    _seed_for,
    bootstrap_replicates,
)
from prorl.evaluate.passk import successes

MEASURES = ("success", "lenient")


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float

    def text(self, signed: bool = False) -> str:
        f = "{:+.3f}" if signed else "{:.3f}"
        return f"{f.format(self.value)} [{f.format(self.lo)}, {f.format(self.hi)}]"


@dataclass(frozen=True)
class Change:
    """Macro averages over ``tasks`` of two models on their common problems, and the
    change (after - before), each with its 95 % paired bootstrap interval."""

    before: Interval
    after: Interval
    delta: Interval
    tasks: tuple[str, ...]
    problems: int


def per_problem_values(tr: TaskResult, measure: str, threshold: float) -> FloatArray | None:
    """[P] a model's value on each problem of a task; None when the measure is undefined
    (``lenient`` on a task whose references are not numbers)."""
    if measure == "success":
        return np.asarray(successes(tr.rewards, threshold) / tr.rewards.shape[1], np.float64)
    if measure == "lenient":
        return None if tr.lenient is None else np.asarray(tr.lenient.mean(axis=1), np.float64)
    raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")


def paired_change(
    results: Results,
    before: str,
    after: str,
    before_measure: str = "success",
    after_measure: str = "success",
    n_boot: int = 2000,
    seed: int = 0,
) -> Change | None:
    """Model ``after`` against model ``before`` over the tasks both evaluated (and where
    both measures are defined), on their common problems; None when there are none."""
    pairs: list[tuple[str, FloatArray, FloatArray]] = []
    for task in results.tasks:
        a, b = results.data.get((before, task)), results.data.get((after, task))
        if a is None or b is None:
            continue
        va = per_problem_values(a, before_measure, results.threshold)
        vb = per_problem_values(b, after_measure, results.threshold)
        if va is None or vb is None:
            continue
        ib = {u: i for i, u in enumerate(b.uids)}
        common = [(i, ib[u]) for i, u in enumerate(a.uids) if u in ib]
        if not common:
            continue
        pairs.append((task, va[[i for i, _ in common]], vb[[j for _, j in common]]))
    if not pairs:
        return None
    # [n_boot, 3]: before, after and their difference; one draw of problems per task and
    # replicate serves all three (paired), then the macro average over tasks
    reps = np.mean(
        [
            bootstrap_replicates(
                np.stack([va, vb, vb - va], axis=1), n_boot, _seed_for(seed, before, after, task)
            )
            for task, va, vb in pairs
        ],
        axis=0,
    )
    point = np.mean([[va.mean(), vb.mean(), (vb - va).mean()] for _, va, vb in pairs], axis=0)
    lo, hi = _interval(reps)
    before_i, after_i, delta_i = (
        Interval(float(point[j]), float(lo[j]), float(hi[j])) for j in range(3)
    )
    return Change(
        before=before_i,
        after=after_i,
        delta=delta_i,
        tasks=tuple(t for t, _, _ in pairs),
        problems=sum(len(va) for _, va, _ in pairs),
    )
