"""Is more training worth buying? A saturating fit of validation success against compute.

ScaleRL (Khatri et al., 2025) models RL's validation pass rate R at training compute C as a
sigmoid that rises from the base's R0 towards a ceiling A:

    R(C) = R0 + (A - R0) / (1 + (C_mid / C) ** B)

A is the asymptote (the projected ceiling), B the steepness, C_mid the compute at which half
of the gain A - R0 is reached. R0 is fixed at the base model's measured value (C = 0); for
fixed (B, C_mid) the model is linear in A, so A has a closed form and the fit searches a
log grid over (B, C_mid), then a finer grid around the best point. Pure numpy and
deterministic: the same points always give the same fit.

The ceiling's uncertainty comes from a paired bootstrap over problems: each replicate
resamples the evaluated problems (the same draw for every checkpoint), recomputes each
checkpoint's success rate and refits. With few checkpoints the interval is wide, and it
says so; extrapolation beyond the largest compute measured is a projection, not a result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from prorl.evaluate.analysis import FloatArray, Results, _seed_for, bootstrap_replicates
from prorl.evaluate.passk import successes

_STEP = re.compile(r"^step[_-]?0*(\d+)$")


def sigmoid_curve(c: FloatArray, r0: float, a: float, b: float, c_mid: float) -> FloatArray:
    """R(C) for compute values ``c`` (>= 0; R(0) = r0)."""
    c = np.asarray(c, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        g = np.where(c > 0, 1.0 / (1.0 + (c_mid / np.maximum(c, 1e-300)) ** b), 0.0)
    return np.asarray(r0 + (a - r0) * g, dtype=np.float64)


@dataclass(frozen=True)
class Fit:
    r0: float
    a: float  # the ceiling
    b: float
    c_mid: float
    rmse: float

    def __call__(self, c: FloatArray | float) -> FloatArray:
        c = np.atleast_1d(np.asarray(c, np.float64))
        return sigmoid_curve(c, self.r0, self.a, self.b, self.c_mid)


def _best_a(g: FloatArray, y: FloatArray, r0: float) -> FloatArray:
    """Least-squares A for each row of ``g`` [G, N] (the sigmoid's 0..1 factor), clipped so
    the ceiling stays a probability."""
    num = (g * (y - r0)).sum(axis=1)
    den = (g * g).sum(axis=1)
    gain = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    return np.asarray(np.clip(r0 + gain, 0.0, 1.0), dtype=np.float64)


def _grid_fit(c: FloatArray, y: FloatArray, r0: float, bs: FloatArray, mids: FloatArray) -> Fit:
    grid_b, grid_m = np.meshgrid(bs, mids, indexing="ij")
    bb, mm = grid_b.ravel(), grid_m.ravel()  # every (B, C_mid) pair, flat
    g = 1.0 / (1.0 + (mm[:, None] / c[None, :]) ** bb[:, None])  # [G, N]
    a = _best_a(g, y, r0)
    err = ((r0 + (a[:, None] - r0) * g - y[None, :]) ** 2).mean(axis=1)
    i = int(np.argmin(err))
    return Fit(r0, float(a[i]), float(bb[i]), float(mm[i]), float(np.sqrt(err[i])))


def fit_saturating(compute: FloatArray, success: FloatArray, r0: float) -> Fit:
    """Fit R(C) to points (compute > 0, success) with R(0) = ``r0``. Needs >= 2 points."""
    c = np.asarray(compute, dtype=np.float64)
    y = np.asarray(success, dtype=np.float64)
    if c.shape != y.shape or len(c) < 2 or np.any(c <= 0):
        raise ValueError("fit_saturating needs >= 2 points with compute > 0")
    lo, hi = float(c.min()), float(c.max())
    bs = np.geomspace(0.2, 8.0, 48)
    mids = np.geomspace(lo / 20, hi * 50, 96)
    coarse = _grid_fit(c, y, r0, bs, mids)
    # refine around the coarse optimum: one grid step either side, 4x finer
    fb, fm = bs[1] / bs[0], mids[1] / mids[0]
    fine_b = np.geomspace(coarse.b / fb, coarse.b * fb, 17)
    fine_m = np.geomspace(coarse.c_mid / fm, coarse.c_mid * fm, 17)
    fine = _grid_fit(c, y, r0, fine_b, fine_m)
    return fine if fine.rmse <= coarse.rmse else coarse


def step_of(label: str) -> int | None:
    """The training step in a checkpoint label such as ``step_000200``; None otherwise."""
    m = _STEP.match(label)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class ComputeFit:
    steps: list[int]  # compute of each point (training steps; the base is 0)
    success: list[float]  # macro success rate over the tasks at each point
    models: list[str]
    fit: Fit
    ceiling_lo: float  # 95 % bootstrap interval of the ceiling A
    ceiling_hi: float
    at_double: float  # R at twice the largest compute measured (a projection)
    tasks: list[str]
    problems: int


def compute_fit(
    results: Results, tasks: list[str] | None = None, n_boot: int = 200, seed: int = 0
) -> ComputeFit | None:
    """Fit the macro success rate over ``tasks`` (default: every task every point has)
    against training steps. Points: the first model at step 0 (the base) and every model
    labelled ``step_N``. None with fewer than 2 trained points."""
    pts = [(0, results.models[0])] + [
        (s, m) for m in results.models[1:] if (s := step_of(m)) is not None and s > 0
    ]
    if len(pts) < 3:
        return None
    names = [m for _, m in pts]
    tasks = [t for t in (tasks or results.tasks) if all((m, t) in results.data for m in names)]
    if not tasks:
        return None
    # [P_total, M]: per problem (common to every point) the success rate of each model;
    # each task's columns are weighted by 1/P_task so the mean over rows is a macro average
    blocks = []
    for t in tasks:
        trs = [results.data[(m, t)] for m in names]
        common = set.intersection(*(set(tr.uids) for tr in trs))
        cols = []
        for tr in trs:
            rate = successes(tr.rewards, results.threshold) / tr.rewards.shape[1]
            cols.append([r for u, r in zip(tr.uids, rate, strict=True) if u in common])
        blocks.append(np.array(cols, dtype=np.float64).T)
    steps = np.array([s for s, _ in pts], dtype=np.float64)

    def macro(rows: list[FloatArray]) -> FloatArray:
        return np.asarray(np.mean([b.mean(axis=0) for b in rows], axis=0), np.float64)

    y = macro(blocks)
    fit = fit_saturating(steps[1:], y[1:], float(y[0]))
    # paired bootstrap over problems within each task, then refit
    reps = [
        bootstrap_replicates(b, n_boot, _seed_for(seed, "fit", t))
        for b, t in zip(blocks, tasks, strict=True)
    ]
    ceil = []
    for i in range(n_boot):
        yi = np.mean([r[i] for r in reps], axis=0)
        ceil.append(fit_saturating(steps[1:], yi[1:], float(yi[0])).a)
    lo, hi = np.percentile(ceil, [2.5, 97.5])
    return ComputeFit(
        steps=[int(s) for s in steps],
        success=[float(v) for v in y],
        models=names,
        fit=fit,
        ceiling_lo=float(lo),
        ceiling_hi=float(hi),
        at_double=float(fit(2 * steps.max())[0]),
        tasks=tasks,
        problems=sum(b.shape[0] for b in blocks),
    )
