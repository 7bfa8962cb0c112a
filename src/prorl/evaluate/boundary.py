"""Has training moved the reasoning boundary? Base against final model, per task (numpy only).

ProRL's evidence is pass@k at large k, base against trained, per task. This module turns
stored results into the numbers that claim rests on, each with a paired bootstrap interval
over problems (the same draw of problems for both models):

- the change of pass@1 (the success rate) and of pass@k_max (the boundary);
- the same under **lenient** extraction (the last number of the response is the answer),
  so a "boundary" that moved only because the model learnt the answer tags shows as a
  format result: the strict boundary moves while the lenient one does not;
- the problems solved (at least once in n) only by the final model, and only by the base;
- the correlation, over tasks, between the base's boundary and the gain in it (ProRL
  found it negative: training helps most where the base is weakest);
- each model's lenient pass@k_max against its question-blind guessing floor
  (``prorl.evaluate.blind``): on small-answer tasks a model that spreads its numbers over
  k samples solves problems it never read, so a boundary under that floor says nothing.
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
from prorl.evaluate.blind import floor_at_k
from prorl.evaluate.change import Interval
from prorl.evaluate.passk import pass_at_k_matrix, successes

READINGS = ("strict", "lenient")


def success_counts(tr: TaskResult, reading: str, threshold: float) -> FloatArray | None:
    """[P] successes per problem: ``strict`` (reward >= threshold) or ``lenient`` (the last
    number is the reference); None when the lenient reading is undefined for the task."""
    if reading == "strict":
        return np.asarray(successes(tr.rewards, threshold), dtype=np.float64)
    if reading == "lenient":
        return None if tr.lenient is None else np.asarray(tr.lenient.sum(axis=1), np.float64)
    raise ValueError(f"reading must be one of {', '.join(READINGS)}, got {reading!r}")


@dataclass(frozen=True)
class PairedChange:
    """One measure of the base and the final model on their common problems, and the change
    (final - base), each with a 95 % paired bootstrap interval over problems."""

    base: Interval
    final: Interval
    delta: Interval

    @property
    def significant(self) -> bool:
        """The interval of the change excludes zero."""
        return self.delta.lo > 0 or self.delta.hi < 0


@dataclass(frozen=True)
class Reading:
    """Everything about one task under one reading (strict or lenient)."""

    pass1: PairedChange
    boundary: PairedChange  # pass@k_max
    only_final: list[str]  # uids the final model solved at least once and the base never
    only_base: list[str]  # uids the base solved at least once and the final model never
    base_solved: int  # problems the base solved at least once


@dataclass(frozen=True)
class TaskBoundary:
    task: str
    domain: str
    base: str
    final: str
    problems: int  # common problems
    k_max: int
    strict: Reading
    lenient: Reading | None  # None where the references are not numbers

    @property
    def format_only(self) -> bool:
        """The strict boundary rose significantly but the lenient one did not: the gain
        is the answer format, not capability."""
        return (
            self.lenient is not None
            and self.strict.boundary.delta.lo > 0
            and not self.lenient.boundary.delta.lo > 0
        )


def _paired(values: FloatArray, n_boot: int, seed: int) -> PairedChange:
    """``values`` [P, 2] (base, final) -> their means and the mean difference, with paired
    bootstrap intervals."""
    full = np.concatenate([values, values[:, 1:2] - values[:, 0:1]], axis=1)
    reps = bootstrap_replicates(full, n_boot, seed)
    lo, hi = _interval(reps)
    point = full.mean(axis=0)
    base, final, delta = (Interval(float(point[j]), float(lo[j]), float(hi[j])) for j in range(3))
    return PairedChange(base, final, delta)


def _reading(
    a: TaskResult,
    b: TaskResult,
    common: list[tuple[int, int]],
    reading: str,
    k: int,
    threshold: float,
    n_boot: int,
    seed: int,
) -> Reading | None:
    ca, cb = success_counts(a, reading, threshold), success_counts(b, reading, threshold)
    if ca is None or cb is None:
        return None
    ia, ib = [i for i, _ in common], [j for _, j in common]
    ca, cb = ca[ia], cb[ib]
    na, nb = a.rewards.shape[1], b.rewards.shape[1]
    p1 = np.stack([ca / na, cb / nb], axis=1)
    pk_a = pass_at_k_matrix(np.full(len(ca), na), ca.astype(np.int64), [k])[:, 0]
    pk_b = pass_at_k_matrix(np.full(len(cb), nb), cb.astype(np.int64), [k])[:, 0]
    pk = np.stack([pk_a, pk_b], axis=1)
    uids = [a.uids[i] for i in ia]
    return Reading(
        pass1=_paired(p1, n_boot, _seed_for(seed, a.task, reading, "pass1")),
        boundary=_paired(pk, n_boot, _seed_for(seed, a.task, reading, "boundary")),
        only_final=[u for u, x, y in zip(uids, ca, cb, strict=True) if y > 0 and x == 0],
        only_base=[u for u, x, y in zip(uids, ca, cb, strict=True) if x > 0 and y == 0],
        base_solved=int((ca > 0).sum()),
    )


def task_boundary(
    results: Results, task: str, base: str, final: str, n_boot: int = 2000, seed: int = 0
) -> TaskBoundary | None:
    """Base against final model on ``task``'s common problems at k_max = the largest k both
    sample counts allow; None when either model lacks the task or they share no problem."""
    a, b = results.data.get((base, task)), results.data.get((final, task))
    if a is None or b is None:
        return None
    ib = {u: j for j, u in enumerate(b.uids)}
    common = [(i, ib[u]) for i, u in enumerate(a.uids) if u in ib]
    if not common:
        return None
    k = max(x for x in results.ks if x <= min(a.rewards.shape[1], b.rewards.shape[1]))
    strict = _reading(a, b, common, "strict", k, results.threshold, n_boot, seed)
    assert strict is not None  # the strict reading is always defined
    return TaskBoundary(
        task=task,
        domain=results.domains.get(task, "other"),
        base=base,
        final=final,
        problems=len(common),
        k_max=k,
        strict=strict,
        lenient=_reading(a, b, common, "lenient", k, results.threshold, n_boot, seed),
    )


def boundaries(
    results: Results,
    base: str | None = None,
    final: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[TaskBoundary]:
    """``task_boundary`` for every task (base: the first model, final: the last)."""
    base = base or results.models[0]
    final = final or results.models[-1]
    if base == final:
        return []
    return [
        tb for t in results.tasks if (tb := task_boundary(results, t, base, final, n_boot, seed))
    ]


def above_guessing(
    tr: TaskResult, k: int, threshold: float, n_boot: int = 2000, seed: int = 0
) -> PairedChange | None:
    """``tr``'s lenient pass@k against its guessing floor at k, paired over problems
    (``base`` = the floor, ``final`` = pass@k, ``delta`` = the margin above the floor);
    None where either is undefined (answers that are not numbers) or k exceeds n."""
    counts = success_counts(tr, "lenient", threshold)
    n = tr.rewards.shape[1]
    if counts is None or tr.blind_p is None or k > n:
        return None
    floor = floor_at_k(tr.blind_p, k)
    solved = pass_at_k_matrix(np.full(len(counts), n), counts.astype(np.int64), [k])[:, 0]
    values = np.stack([floor, solved], axis=1)
    return _paired(values, n_boot, _seed_for(seed, tr.model, tr.task, "guessing"))


@dataclass(frozen=True)
class Correlation:
    """Pearson correlation over tasks between the base's boundary (x) and its gain (y)."""

    x: list[float]
    y: list[float]
    tasks: list[str]
    r: float | None  # None with fewer than 3 tasks or no spread
    slope: float | None  # least-squares slope of y on x


def pearson(x: FloatArray, y: FloatArray) -> float | None:
    """Pearson's r; None with fewer than 3 points or a constant variable."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def gain_correlation(tbs: list[TaskBoundary], reading: str = "strict") -> Correlation:
    """Gain in pass@k_max against the base's pass@k_max over the tasks (with that reading)."""
    pts = [
        (tb.task, r.boundary.base.value, r.boundary.delta.value)
        for tb in tbs
        if (r := tb.strict if reading == "strict" else tb.lenient) is not None
    ]
    x = np.array([p[1] for p in pts], dtype=np.float64)
    y = np.array([p[2] for p in pts], dtype=np.float64)
    coef = pearson(x, y)
    slope = float(np.polyfit(x, y, 1)[0]) if coef is not None else None
    return Correlation(
        [float(v) for v in x], [float(v) for v in y], [p[0] for p in pts], coef, slope
    )
