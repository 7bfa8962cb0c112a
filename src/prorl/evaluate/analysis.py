"""Analyses over stored evaluation results (pure, numpy only, no torch).

Everything here is recomputed from the JSONL files, never from a live model:

- pass@1 is the success rate: the share of samples with ``reward >= threshold``, the k = 1
  point of the pass@k curves (unbiased estimator on successes, see ``passk``). The mean
  reward (partial credit averaged) is a separate number, ``mean_reward``, never "pass@1".
- The null floor: the success rate of four trivial responses (empty; the answer format
  around nothing; around a junk string; the prompt echoed back), stored per problem by the
  runner under ``"floor"``. A task's floor is the best of the four (``Floor``); rows written
  before it existed have none (``None``).
- The guessing floor (``prorl.evaluate.blind``): per problem, the chance that one answer
  drawn from the model's own final numbers on the task's other problems is right; its
  pass@k is what a guesser that never reads the question would score (tasks with numeric
  answers only).
- The format rate: the share of samples that answered in the task's format, over the
  samples where the task has one (``"formatted"`` not null); None when nothing says.
- Confidence intervals: percentile bootstrap over problems (95 %, ``n_boot`` replicates, an
  explicit seed), so the same directory always gives the same report.
- Domain figures are macro averages over the domain's tasks (each task weighs the same);
  their bootstrap resamples problems within each task.
- Comparisons take the first model as the base and the last as the final model; with three
  or more models the one before the final is the intermediate checkpoint (see
  ``classify_regime`` for the rule). Regimes use pass@1 as the success rate, like every
  other pass@1 here; the mean reward plays no part in them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from prorl.evaluate import store
from prorl.evaluate.blind import Answer, blind_success_probs, constant_answer, floor_at_k
from prorl.evaluate.passk import DEFAULT_THRESHOLD, default_ks, pass_at_k_matrix, successes
from prorl.tasks.selfcheck import TRIVIAL
from prorl.verify.lenient import as_number, last_number, lenient_correct

FloatArray = npt.NDArray[np.float64]
DEFAULT_TOLERANCE = 0.02
HIST_EDGES = np.linspace(0.0, 1.0, 11)  # per-problem pass@1 histogram: 10 bins of 0.1
REGIMES = ("unsolved", "diminish", "plateau", "sustained", "expand")
# The trivial policies of the null floor, as the runner stores them, and their names in
# reports.
FLOOR_POLICIES = TRIVIAL
FLOOR_NAMES = {"empty": "empty", "format": "format-only", "junk": "junk", "echo": "echo"}
# Columns of ``per_problem`` before the pass@k values.
COL_PASS1, COL_MEAN_REWARD, COL_PASSK = 0, 1, 2


@dataclass(frozen=True)
class TaskResult:
    """All stored samples of one model on one task, problems in index order."""

    model: str
    task: str
    domain: str
    uids: tuple[str, ...]
    questions: tuple[str, ...]
    rewards: FloatArray  # [P, n]
    num_tokens: FloatArray  # [P, n]
    truncated: npt.NDArray[np.bool_]  # [P, n] finish_reason == "length"
    # [P, len(FLOOR_POLICIES)] trivial responses' rewards; NaN where a row has none
    floor_rewards: FloatArray | None = None
    # [P, n] 1.0 answered in the task's format, 0.0 not, NaN unknown (null or absent)
    formatted: FloatArray | None = None
    # [P, n] 1.0 when the response's last number is the reference (``lenient``); None when
    # some reference is not a number
    lenient: FloatArray | None = None
    # [P] chance that one question-blind guess is right (``prorl.evaluate.blind``); None
    # when some reference is not a number or a published row lacks its final numbers
    blind_p: FloatArray | None = None
    # the best constant answer (``prorl.evaluate.blind.best_constant``) as text, and the
    # share of problems it answers; None when some reference is not a number
    constant: tuple[str, float] | None = None

    def blind_pass_at(self, k: int) -> float | None:
        """The guessing floor of pass@k: mean over problems of 1 - (1 - p_i)^k."""
        if self.blind_p is None or not len(self.blind_p):
            return None
        return float(np.mean(floor_at_k(self.blind_p, k)))

    def lenient_rate(self) -> float | None:
        """Success rate under lenient extraction (the last number in the response)."""
        return None if self.lenient is None else float(self.lenient.mean())

    def format_rate(self) -> float | None:
        """Share of samples in the task's format among those where it is known; else None."""
        if self.formatted is None:
            return None
        known = ~np.isnan(self.formatted)
        return float(self.formatted[known].mean()) if known.any() else None


@dataclass(frozen=True)
class Results:
    directory: Path
    models: list[str]  # evaluation order: models[0] is the base
    tasks: list[str]
    domains: dict[str, str]  # task -> domain
    n: int
    ks: list[int]
    threshold: float
    data: dict[tuple[str, str], TaskResult]
    manifest: dict[str, Any] = field(default_factory=dict)

    def constant(self, task: str) -> tuple[str, float] | None:
        """The task's best constant answer and its share of problems (the first model's
        that has one: every model answers the same problems)."""
        found = (tr.constant for (_, t), tr in self.data.items() if t == task)
        return next((c for c in found if c is not None), None)


@dataclass(frozen=True)
class Curve:
    """pass@1 (success rate), mean reward and the pass@k curve, 95 % bootstrap intervals."""

    ks: list[int]
    passk: FloatArray  # [K]
    lo: FloatArray
    hi: FloatArray
    pass1: float  # success rate (reward >= threshold): the k = 1 point of the curve
    pass1_lo: float
    pass1_hi: float
    mean_reward: float  # average reward, partial credit included
    mean_reward_lo: float
    mean_reward_hi: float
    problems: int


@dataclass(frozen=True)
class Floor:
    """The null floor of one (model, task): how the four trivial policies score.

    ``success[p]`` is the share of problems on which policy p's response reaches the
    threshold (a trivial response is deterministic: that is its pass@k for every k),
    ``mean_reward[p]`` its average reward; policies a row does not report are left out.
    ``problems`` counts the problems whose rows carry a floor."""

    success: dict[str, float]
    mean_reward: dict[str, float]
    problems: int

    @property
    def policy(self) -> str:
        """The best trivial policy: highest success rate, then highest mean reward."""
        order = [p for p in FLOOR_POLICIES if p in self.success]
        return max(order, key=lambda p: (self.success[p], self.mean_reward[p]))

    @property
    def value(self) -> float:
        """The floor: the best trivial policy's success rate."""
        return self.success[self.policy]


def load_results(directory: Path | str, threshold: float | None = None) -> Results:
    """Load an evaluation directory (or a run directory holding ``eval/``).

    Raises ValueError when nothing was stored yet or sample counts disagree.
    """
    d = store.find_eval_dir(Path(directory))
    man = store.read_manifest(d) or {}
    models = [m["label"] for m in man.get("models", [])]
    tasks = [t["name"] for t in man.get("tasks", [])]
    domains = {t["name"]: t.get("domain", "other") for t in man.get("tasks", [])}
    data: dict[tuple[str, str], TaskResult] = {}
    for model in models:
        for task in tasks:
            rows = store.read_rows(store.results_path(d, model, task))
            if rows:
                data[(model, task)] = _task_result(model, task, domains[task], rows)
    if not data:
        raise ValueError(f"{d} holds no finished problems yet (run `prorl eval --out {d}`)")
    ns = {tr.rewards.shape[1] for tr in data.values()}
    if len(ns) != 1:
        raise ValueError(f"{d}: results mix different sample counts n={sorted(ns)}")
    n = ns.pop()
    ks = [k for k in man.get("ks") or default_ks(n) if k <= n] or default_ks(n)
    thr = float(threshold if threshold is not None else man.get("threshold", DEFAULT_THRESHOLD))
    models = [m for m in models if any((m, t) in data for t in tasks)]
    tasks = [t for t in tasks if any((m, t) in data for m in models)]
    return Results(d, models, tasks, domains, n, ks, thr, data, man)


def select_models(results: Results, labels: Sequence[str]) -> Results:
    """``results`` restricted to ``labels``, in that order (the first is then the base, the
    last the final model); an unknown label is a ValueError naming the known ones."""
    labels = list(dict.fromkeys(labels))
    unknown = [m for m in labels if m not in results.models]
    if unknown:
        raise ValueError(
            f"no results for model {', '.join(unknown)} in {results.directory} "
            f"(it has {', '.join(results.models)})"
        )
    data = {k: v for k, v in results.data.items() if k[0] in labels}
    tasks = [t for t in results.tasks if any((m, t) in data for m in labels)]
    return replace(results, models=labels, tasks=tasks, data=data)


def _task_result(model: str, task: str, domain: str, rows: list[dict[str, Any]]) -> TaskResult:
    rows = sorted(rows, key=lambda r: int(r["index"]))
    sizes = {len(r["samples"]) for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"{model}/{task}: problems have different sample counts {sorted(sizes)}")
    rewards = np.array([[s["reward"] for s in r["samples"]] for r in rows], dtype=np.float64)
    tokens = np.array([[s["num_tokens"] for s in r["samples"]] for r in rows], dtype=np.float64)
    trunc = np.array([[s["finish_reason"] == "length" for s in r["samples"]] for r in rows])
    refs = _refs(rows)  # for the guessing floor and the best constant answer
    floors = None
    if any(isinstance(r.get("floor"), dict) for r in rows):
        floors = np.array(
            [[_number(_floor_of(r).get(p)) for p in FLOOR_POLICIES] for r in rows],
            dtype=np.float64,
        )
    formatted = None
    if any("formatted" in s for r in rows for s in r["samples"]):
        formatted = np.array(
            [[_number(s.get("formatted")) for s in r["samples"]] for r in rows], dtype=np.float64
        )
    return TaskResult(
        model,
        task,
        domain,
        tuple(str(r["uid"]) for r in rows),
        tuple(str(r.get("question", "")) for r in rows),
        rewards,
        tokens,
        trunc.astype(bool),
        floors,
        formatted,
        _lenient(rows),
        _blind(rows, refs),
        constant_answer(refs),
    )


def _lenient(rows: list[dict[str, Any]]) -> FloatArray | None:
    marks = [[_lenient_mark(s, str(r.get("answer", ""))) for s in r["samples"]] for r in rows]
    if not rows or any(m is None for row in marks for m in row):
        return None
    return np.array(marks, dtype=np.float64)


def _lenient_mark(sample: dict[str, Any], answer: str) -> bool | None:
    """The lenient reading of a sample: from its text, or, for published rows that dropped
    the text (prorl.study.published), the flag computed from it when it was published."""
    if "text" in sample:
        return lenient_correct(sample["text"], answer)
    mark = sample.get("lenient")
    return None if mark is None else bool(mark)


def _finals(row: dict[str, Any]) -> list[Answer] | None:
    """Each sample's last number: from its text, or from the ``final`` a published row kept;
    None when some sample has neither (published before ``final`` was kept)."""
    out: list[Answer] = []
    for sample in row["samples"]:
        if "text" in sample:
            out.append(last_number(sample["text"]))
        elif "final" in sample:
            out.append(None if sample["final"] is None else as_number(str(sample["final"])))
        else:
            return None
    return out


def _refs(rows: list[dict[str, Any]]) -> list[Fraction | None]:
    """Each row's reference as a number; None where it is not one."""
    return [as_number(str(r.get("answer", ""))) for r in rows]


def _blind(rows: list[dict[str, Any]], refs: list[Fraction | None]) -> FloatArray | None:
    answers = [_finals(r) for r in rows]
    known_refs = [ref for ref in refs if ref is not None]
    known_answers = [a for a in answers if a is not None]
    if not rows or len(known_refs) < len(rows) or len(known_answers) < len(rows):
        return None
    return np.array(blind_success_probs(known_answers, known_refs), dtype=np.float64)


def _floor_of(row: dict[str, Any]) -> dict[str, Any]:
    floor = row.get("floor")
    return floor if isinstance(floor, dict) else {}


def _number(value: Any) -> float:
    """A stored reward or flag as a float; None (or absent) is NaN: unknown."""
    return float("nan") if value is None else float(value)


def task_floor(tr: TaskResult, threshold: float) -> Floor | None:
    """The null floor over the problems whose rows carry one; None when none does."""
    if tr.floor_rewards is None:
        return None
    rows = tr.floor_rewards[~np.all(np.isnan(tr.floor_rewards), axis=1)]
    success: dict[str, float] = {}
    mean: dict[str, float] = {}
    for j, policy in enumerate(FLOOR_POLICIES):
        col = rows[:, j][~np.isnan(rows[:, j])]
        if len(col):
            success[policy] = float((col >= threshold).mean())
            mean[policy] = float(col.mean())
    return Floor(success, mean, len(rows)) if success else None


# ---------------------------------------------------------------- bootstrap and curves


def _seed_for(seed: int, *names: str) -> int:
    # Stable across processes (unlike hash()): each (model, task) gets its own stream.
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**32)


def bootstrap_replicates(values: FloatArray, n_boot: int, seed: int) -> FloatArray:
    """Means of ``values`` [P, M] over problems resampled with replacement: [n_boot, M]."""
    p = values.shape[0]
    rng = np.random.default_rng(seed)
    # Resampling counts instead of index arrays keeps memory at [B, P], not [B, P, M].
    counts = rng.multinomial(p, np.full(p, 1.0 / p), size=n_boot).astype(np.float64)
    return np.asarray(counts @ values / p, dtype=np.float64)


def _interval(reps: FloatArray) -> tuple[FloatArray, FloatArray]:
    lo, hi = np.percentile(reps, [2.5, 97.5], axis=0)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def per_problem(tr: TaskResult, ks: Sequence[int], threshold: float) -> FloatArray:
    """[P, 2 + K] per problem: the success rate c/n (``COL_PASS1``, the unbiased pass@1),
    the mean reward (``COL_MEAN_REWARD``), then pass@k for each k (from ``COL_PASSK``)."""
    n = tr.rewards.shape[1]
    c = successes(tr.rewards, threshold)
    curve = pass_at_k_matrix(np.full(len(c), n), c, ks)
    rate = (c / n).astype(np.float64)[:, None]
    return np.concatenate([rate, tr.rewards.mean(axis=1, keepdims=True), curve], axis=1)


def _curve_from(values_mean: FloatArray, reps: FloatArray, ks: list[int], p: int) -> Curve:
    lo, hi = _interval(reps)
    a, b, k0 = COL_PASS1, COL_MEAN_REWARD, COL_PASSK
    return Curve(
        ks,
        values_mean[k0:],
        lo[k0:],
        hi[k0:],
        float(values_mean[a]),
        float(lo[a]),
        float(hi[a]),
        float(values_mean[b]),
        float(lo[b]),
        float(hi[b]),
        p,
    )


def task_curve(tr: TaskResult, ks: list[int], threshold: float, n_boot: int, seed: int) -> Curve:
    values = per_problem(tr, ks, threshold)
    reps = bootstrap_replicates(values, n_boot, _seed_for(seed, tr.model, tr.task))
    return _curve_from(values.mean(axis=0), reps, ks, values.shape[0])


def domain_curve(
    trs: Sequence[TaskResult], ks: list[int], threshold: float, n_boot: int, seed: int
) -> Curve:
    """Macro average over tasks; each bootstrap replicate resamples every task's problems."""
    means, reps = [], []
    for tr in trs:
        values = per_problem(tr, ks, threshold)
        means.append(values.mean(axis=0))
        reps.append(bootstrap_replicates(values, n_boot, _seed_for(seed, tr.model, tr.task)))
    p = sum(tr.rewards.shape[0] for tr in trs)
    return _curve_from(np.mean(means, axis=0), np.mean(reps, axis=0), ks, p)


# ---------------------------------------------------------------- regimes and comparisons


def classify_regime(
    pass1: Sequence[float], boundary: Sequence[float], tol: float = DEFAULT_TOLERANCE
) -> str:
    """Classify a task's change over checkpoints ordered base, ..., intermediate, final.

    ``pass1[m]`` is model m's pass@1 (success rate, never the mean reward) and
    ``boundary[m]`` its pass@k at the largest k.

    - *unsolved*: neither the base nor the final model succeeded on any problem (both
      boundaries 0): nothing was there to expand or diminish, and no verdict is given.
    - *diminish*: the final boundary is not above the base's by more than ``tol`` (flat or
      down), whatever pass@1 did: training did not expand the reasoning boundary.
    - *sustained*: the boundary expanded, and from the intermediate to the final model
      pass@1 or the boundary still rose by more than ``tol``: still improving at the end.
    - *plateau*: the boundary expanded, but neither rose by more than ``tol`` after the
      intermediate checkpoint: the gains were made early.
    - *expand*: only two models (no intermediate), boundary expanded: plateau and sustained
      cannot be told apart without a checkpoint in between.
    """
    if len(pass1) != len(boundary) or len(pass1) < 2:
        raise ValueError("classify_regime needs pass@1 and boundary values for >= 2 models")
    if boundary[0] == 0 and boundary[-1] == 0:
        return "unsolved"
    if boundary[-1] - boundary[0] <= tol:
        return "diminish"
    if len(boundary) == 2:
        return "expand"
    late = max(pass1[-1] - pass1[-2], boundary[-1] - boundary[-2])
    return "sustained" if late > tol else "plateau"


@dataclass(frozen=True)
class TaskComparison:
    task: str
    domain: str
    models: list[str]  # the models compared, base first
    pass1: list[float]  # success rate per model
    mean_reward: list[float]  # average reward per model (not used by the regime)
    boundary: list[float]  # pass@k_max per model
    k_max: int
    regime: str
    base_all_zero: bool  # the base never succeeded on any problem in n samples
    newly_solved: dict[str, list[str]]  # later model -> uids the base never solved

    @property
    def delta_pass1(self) -> float:
        return self.pass1[-1] - self.pass1[0]

    @property
    def delta_boundary(self) -> float:
        return self.boundary[-1] - self.boundary[0]


@dataclass
class Analysis:
    results: Results
    task_curves: dict[tuple[str, str], Curve]  # (model, task)
    domain_curves: dict[tuple[str, str], Curve]  # (model, domain)
    histograms: dict[tuple[str, str], npt.NDArray[np.int64]]  # (model, task) -> counts
    comparisons: list[TaskComparison]
    tolerance: float
    floors: dict[tuple[str, str], Floor | None] = field(default_factory=dict)  # (model, task)

    def task_floor(self, task: str) -> Floor | None:
        """The task's floor for reports: the first model's that has one (the trivial
        responses do not depend on the model; only the problems evaluated can differ)."""
        for m in self.results.models:
            if (f := self.floors.get((m, task))) is not None:
                return f
        return None


def newly_solved(base: TaskResult, later: TaskResult, threshold: float) -> list[str]:
    """uids of problems ``later`` solved at least once that ``base`` never solved."""
    base_c = dict(zip(base.uids, successes(base.rewards, threshold), strict=True))
    later_c = successes(later.rewards, threshold)
    return [u for u, c in zip(later.uids, later_c, strict=True) if c > 0 and base_c.get(u) == 0]


def compare_task(
    results: Results, task: str, curves: dict[tuple[str, str], Curve], tol: float
) -> TaskComparison | None:
    """Compare the models that evaluated ``task``; None when fewer than two did.

    pass@1, mean reward and the boundary are taken over the problems every compared model
    has (a model evaluated with a larger ``--problems`` must not look better or worse for
    that)."""
    models = [m for m in results.models if (m, task) in results.data]
    if len(models) < 2:
        return None
    common = set.intersection(*(set(results.data[(m, task)].uids) for m in models))
    p1, mr, bound = [], [], []
    for m in models:
        tr = results.data[(m, task)]
        keep = np.array([u in common for u in tr.uids])
        values = per_problem(tr, results.ks[-1:], results.threshold)[keep]  # [P, 3]
        mean = values.mean(axis=0) if len(values) else np.zeros(COL_PASSK + 1)
        p1.append(float(mean[COL_PASS1]))
        mr.append(float(mean[COL_MEAN_REWARD]))
        bound.append(float(mean[COL_PASSK]))
    base = results.data[(models[0], task)]
    base_c = successes(base.rewards, results.threshold)
    return TaskComparison(
        task=task,
        domain=results.domains.get(task, "other"),
        models=models,
        pass1=p1,
        mean_reward=mr,
        boundary=bound,
        k_max=results.ks[-1],
        regime=classify_regime(p1, bound, tol),
        base_all_zero=bool(np.all(base_c == 0)),
        newly_solved={
            m: newly_solved(base, results.data[(m, task)], results.threshold) for m in models[1:]
        },
    )


def analyse(
    results: Results, n_boot: int = 1000, seed: int = 0, tolerance: float = DEFAULT_TOLERANCE
) -> Analysis:
    """Every table and curve the report shows, from stored results only."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    ks = results.ks
    tc = {
        key: task_curve(tr, ks, results.threshold, n_boot, seed) for key, tr in results.data.items()
    }
    dc: dict[tuple[str, str], Curve] = {}
    for model in results.models:
        by_domain: dict[str, list[TaskResult]] = {}
        for task in results.tasks:
            if (model, task) in results.data:
                by_domain.setdefault(results.domains[task], []).append(results.data[(model, task)])
        for domain, trs in by_domain.items():
            dc[(model, domain)] = domain_curve(trs, ks, results.threshold, n_boot, seed)
    hists = {
        key: np.histogram(problem_pass1(tr, results.threshold), bins=HIST_EDGES)[0].astype(np.int64)
        for key, tr in results.data.items()
    }
    comps = [c for t in results.tasks if (c := compare_task(results, t, tc, tolerance))]
    floors = {key: task_floor(tr, results.threshold) for key, tr in results.data.items()}
    return Analysis(results, tc, dc, hists, comps, tolerance, floors)


def problem_pass1(tr: TaskResult, threshold: float) -> FloatArray:
    """Per-problem pass@1: the share of its n samples that succeed, [P]."""
    return np.asarray(successes(tr.rewards, threshold) / tr.rewards.shape[1], dtype=np.float64)


def summary_metrics(analysis: Analysis, model: str) -> dict[str, float]:
    """Flat metrics of one model (what training logs), per task:

    ``eval/<task>/pass@1`` (success rate), ``eval/<task>/pass@<k>`` for every k > 1,
    ``eval/<task>/mean_reward``, and where known ``eval/<task>/floor`` (the best trivial
    policy's success rate), ``eval/<task>/format_rate`` and ``eval/<task>/lenient_pass@1``
    (success when the response's last number is read as its answer; numeric tasks only)."""
    out: dict[str, float] = {}
    for (m, task), curve in analysis.task_curves.items():
        if m != model:
            continue
        out[f"eval/{task}/pass@1"] = curve.pass1
        for k, v in zip(curve.ks, curve.passk, strict=True):
            if k > 1:
                out[f"eval/{task}/pass@{k}"] = float(v)
        out[f"eval/{task}/mean_reward"] = curve.mean_reward
        if (floor := analysis.floors.get((m, task))) is not None:
            out[f"eval/{task}/floor"] = floor.value
        if (rate := analysis.results.data[(m, task)].format_rate()) is not None:
            out[f"eval/{task}/format_rate"] = rate
        if (lenient := analysis.results.data[(m, task)].lenient_rate()) is not None:
            out[f"eval/{task}/lenient_pass@1"] = lenient
    return out
