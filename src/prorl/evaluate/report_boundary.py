"""The report's reasoning-boundary sections and its machine-readable ``summary.json``.

Sections (base = the first model, final = the last): the paired change of pass@1 and of
pass@k_max per task under strict and lenient extraction, every model's lenient pass@1 and
pass@k_max against its question-blind guessing floor, problems solved only by either model, the gain-versus-base correlation over tasks, and the saturating fit of validation
success against training steps with its projected ceiling.

``summary.json`` holds, for every (task, model), the per-problem sample counts ``n`` and
success counts ``c`` (and ``c_lenient``, and ``blind_p``: each problem's chance that one
question-blind guess is right), so every pass@k in the report can be recomputed
by anyone with ``1 - C(n - c, k) / C(n, k)``, together with the figures the report prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prorl.evaluate import plots
from prorl.evaluate.analysis import Analysis
from prorl.evaluate.boundary import Correlation, PairedChange, TaskBoundary
from prorl.evaluate.compute_fit import ComputeFit
from prorl.evaluate.passk import successes

if TYPE_CHECKING:
    from prorl.evaluate.doc import Doc

# (model, task) -> {k: floor vs lenient pass@k}, at k = 1 and k = k_max
Guessing = dict[tuple[str, str], dict[int, PairedChange]]
LIST_LIMIT = 8  # problems listed per task and side in the report (summary.json has all)


def _change(c: PairedChange) -> str:
    sig = " *" if c.significant else ""
    return (
        f"{100 * c.base.value:.1f} -> {100 * c.final.value:.1f} "
        f"({100 * c.delta.value:+.1f} [{100 * c.delta.lo:+.1f}, {100 * c.delta.hi:+.1f}]){sig}"
    )


def section(
    doc: Doc,
    a: Analysis,
    tbs: list[TaskBoundary],
    corrs: dict[str, Correlation],
    fit: ComputeFit | None,
    guess: Guessing,
) -> None:
    if not tbs:
        return
    k = tbs[0].k_max
    doc.heading("Reasoning boundary: base vs final, paired over problems")
    doc.para(
        f"Base {tbs[0].base}, final {tbs[0].final}. Each cell: base -> final (change "
        "[95 % paired bootstrap interval over problems]), in %; * = the interval excludes 0. "
        "strict = the task's own verifier; lenient = the last number in the response is the "
        "answer (tasks with numeric answers). A boundary that rises under strict but not "
        "under lenient extraction is a format result (the model learnt the answer format), "
        "marked 'format only'. A lenient boundary that rose while the final model stays "
        "at or under its question-blind guessing floor (next table) is marked 'guessing': "
        "the model spreads its answers more widely, it has not learnt to solve more. A "
        "lenient pass@1 that rose while the final model stays at or under its floor at "
        "k = 1 is marked 'pass@1 guessing': it answers (nearly) the same whatever the "
        "question, and that answer is common among the problems."
    )
    rows = []
    for tb in tbs:
        le = tb.lenient
        rows.append(
            [
                tb.task,
                str(tb.problems),
                _change(tb.strict.pass1),
                _change(tb.strict.boundary),
                "-" if le is None else _change(le.pass1),
                "-" if le is None else _change(le.boundary),
                _label(tb, guess),
            ]
        )
    head = ["task", "problems", "pass@1", f"pass@{k}", "lenient pass@1", f"lenient pass@{k}", ""]
    doc.table(head, rows)
    _guessing(doc, a, tbs, guess)

    doc.heading("Problems solved (at least once in n) by only one model", 3)
    rows = []
    for tb in tbs:
        for name, r in (("strict", tb.strict), ("lenient", tb.lenient)):
            if r is None:
                continue
            rows.append(
                [
                    tb.task,
                    name,
                    f"{r.base_solved}/{tb.problems}",
                    str(len(r.only_final)),
                    str(len(r.only_base)),
                    _listed(r.only_final),
                ]
            )
    listed = f"only final: problems (first {LIST_LIMIT}; all in summary.json)"
    doc.table(["task", "reading", "base solved", "only final", "only base", listed], rows)
    _questions(doc, a, tbs)

    doc.heading(f"Gain against the base's pass@{k} over tasks", 3)
    for reading, corr in corrs.items():
        coef = "undefined (fewer than 3 tasks or no spread)" if corr.r is None else f"{corr.r:+.2f}"
        doc.para(
            f"{reading}: Pearson r between the base's pass@{k} and its gain over "
            f"{len(corr.tasks)} tasks = {coef}. ProRL reports a negative correlation: RL gains "
            "most where the base is weakest."
        )
    doc.images([(f"gain {rd}", plots.gain_plot(c, k, rd)) for rd, c in corrs.items()])

    doc.heading("Validation success against training compute", 3)
    if fit is None:
        doc.para(
            "No fit: it needs the base and at least two checkpoints labelled step_N "
            "evaluated on the same tasks."
        )
        return
    f = fit.fit
    doc.para(
        f"Fit R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B) to the macro success rate over "
        f"{len(fit.tasks)} tasks ({fit.problems} problems) at steps {fit.steps}: "
        f"R0 = {f.r0:.3f} (base), ceiling A = {f.a:.3f} [95 % bootstrap over problems: "
        f"{fit.ceiling_lo:.3f}, {fit.ceiling_hi:.3f}], B = {f.b:.2f}, C_mid = {f.c_mid:.0f} "
        f"steps, rmse {f.rmse:.3f}. Projected at step {2 * max(fit.steps)} (twice the "
        f"compute measured): {fit.at_double:.3f}, against {fit.success[-1]:.3f} measured at "
        f"step {max(fit.steps)}. A projection, not a measurement; with few checkpoints the "
        "interval is wide."
    )
    doc.images([("compute fit", plots.compute_fit_plot(fit))])


def guessing_only(tb: TaskBoundary, guess: Guessing) -> bool:
    """The lenient boundary rose significantly, but the final model's pass@k_max does not
    lie clearly above its guessing floor: the rise is answer spread, not a moved boundary."""
    g = guess.get((tb.final, tb.task), {}).get(tb.k_max)
    le = tb.lenient
    return le is not None and le.boundary.delta.lo > 0 and g is not None and not g.delta.lo > 0


def pass1_guessing_only(tb: TaskBoundary, guess: Guessing) -> bool:
    """The lenient pass@1 rose significantly, but the final model's pass@1 does not lie
    clearly above its guessing floor at k = 1: the model gives (nearly) the same answer
    whatever the question, and the rise is that answer being common among the problems."""
    g = guess.get((tb.final, tb.task), {}).get(1)
    le = tb.lenient
    return le is not None and le.pass1.delta.lo > 0 and g is not None and not g.delta.lo > 0


def _label(tb: TaskBoundary, guess: Guessing) -> str:
    labels = [
        ("format only", tb.format_only),
        ("pass@1 guessing", pass1_guessing_only(tb, guess)),
        ("guessing", guessing_only(tb, guess)),
    ]
    return ", ".join(name for name, on in labels if on)


def _margin(g: PairedChange | None) -> list[str]:
    if g is None:
        return ["-", "-", "-"]
    d = g.delta
    star = " *" if d.lo > 0 else ""
    return [
        f"{100 * g.final.value:.1f}",
        f"{100 * g.base.value:.1f}",
        f"{100 * d.value:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]{star}",
    ]


def _guessing(doc: Doc, a: Analysis, tbs: list[TaskBoundary], guess: Guessing) -> None:
    """Every model's lenient pass@1 and pass@k_max against its question-blind guessing
    floor at the same k."""
    k = tbs[0].k_max
    rows = [
        [t, m, *_margin(g.get(1)), *_margin(g.get(k))]
        for t in a.results.tasks
        for m in a.results.models
        if (g := guess.get((m, t)))
    ]
    if not rows:
        return
    doc.heading(f"Lenient pass@1 and pass@{k} against the question-blind guessing floor", 3)
    doc.para(
        "floor = the pass@k of a guesser that never reads the question and draws each "
        "answer from the model's own final numbers on the task's other problems. On tasks "
        "whose answers span a small range, a model that writes a different number in each "
        f"sample solves many problems at k = {k} by spread alone, and a model that writes "
        "the same number whatever the question scores the share of problems with that "
        "answer at k = 1; only the margin above the floor says the model read the problem. "
        "margin = pass - floor [95 % paired bootstrap interval over problems], in %; * = the "
        "interval lies above 0. A pass@1 rise whose final model is not clearly above its "
        "k = 1 floor is marked 'pass@1 guessing' in the table above."
    )
    head = ["task", "model", "lenient pass@1", "floor", "margin"]
    doc.table([*head, f"lenient pass@{k}", "floor", "margin"], rows)


def _listed(uids: list[str]) -> str:
    return " ".join(uids[:LIST_LIMIT]) + (" ..." if len(uids) > LIST_LIMIT else "")


def _questions(doc: Doc, a: Analysis, tbs: list[TaskBoundary]) -> None:
    """The questions of problems only the final model solved (strict), a few per task."""
    rows = []
    for tb in tbs:
        tr = a.results.data[(tb.final, tb.task)]
        questions = dict(zip(tr.uids, tr.questions, strict=True))
        for u in tb.strict.only_final[:3]:
            q = " ".join(questions.get(u, "").split())
            rows.append([tb.task, u, q[:140] + ("..." if len(q) > 140 else "")])
    if rows:
        doc.table(["task", "problem", "question (only the final model solved it)"], rows)


def _interval(c: PairedChange) -> dict[str, Any]:
    return {
        name: {"value": i.value, "lo": i.lo, "hi": i.hi}
        for name, i in (("base", c.base), ("final", c.final), ("delta", c.delta))
    }


def _constant(a: Analysis, task: str) -> dict[str, Any] | None:
    """The task's best constant answer and the share of problems it answers."""
    c = a.results.constant(task)
    return None if c is None else {"answer": c[0], "rate": c[1]}


def summary(
    a: Analysis,
    tbs: list[TaskBoundary],
    corrs: dict[str, Correlation],
    fit: ComputeFit | None,
    guess: Guessing,
) -> dict[str, Any]:
    """Everything needed to recompute the report's numbers, as plain JSON."""
    res = a.results
    counts: dict[str, dict[str, Any]] = {}
    for (m, t), tr in res.data.items():
        c = successes(tr.rewards, res.threshold)
        curve = a.task_curves[(m, t)]
        counts.setdefault(t, {})[m] = {
            "uids": list(tr.uids),
            "n": [int(tr.rewards.shape[1])] * len(tr.uids),
            "c": [int(x) for x in c],
            "c_lenient": None if tr.lenient is None else [int(x) for x in tr.lenient.sum(axis=1)],
            "blind_p": None if tr.blind_p is None else [float(x) for x in tr.blind_p],
            "blind_pass_at_k": None
            if tr.blind_p is None
            else {str(k): tr.blind_pass_at(k) for k in curve.ks},
            "guessing": {str(k): _interval(g) for k, g in guess[(m, t)].items()}
            if guess.get((m, t))
            else None,
            "pass_at_k": {str(k): float(v) for k, v in zip(curve.ks, curve.passk, strict=True)},
            "mean_reward": curve.mean_reward,
        }
    return {
        "directory": str(res.directory),
        "threshold": res.threshold,
        "ks": res.ks,
        "models": res.models,
        "tasks": [
            {"name": t, "domain": res.domains.get(t, "other"), "constant": _constant(a, t)}
            for t in res.tasks
        ],
        "counts": counts,
        "regimes": {c.task: c.regime for c in a.comparisons},
        "boundary": [
            {
                "task": tb.task,
                "base": tb.base,
                "final": tb.final,
                "problems": tb.problems,
                "k_max": tb.k_max,
                "format_only": tb.format_only,
                "guessing_only": guessing_only(tb, guess),
                "pass1_guessing_only": pass1_guessing_only(tb, guess),
                **{
                    name: None
                    if r is None
                    else {
                        "pass1": _interval(r.pass1),
                        "boundary": _interval(r.boundary),
                        "only_final": r.only_final,
                        "only_base": r.only_base,
                        "base_solved": r.base_solved,
                    }
                    for name, r in (("strict", tb.strict), ("lenient", tb.lenient))
                },
            }
            for tb in tbs
        ],
        "correlation": {
            rd: {"r": c.r, "slope": c.slope, "tasks": c.tasks, "base": c.x, "gain": c.y}
            for rd, c in corrs.items()
        },
        "compute_fit": None
        if fit is None
        else {
            "steps": fit.steps,
            "models": fit.models,
            "success": fit.success,
            "r0": fit.fit.r0,
            "ceiling": fit.fit.a,
            "ceiling_lo": fit.ceiling_lo,
            "ceiling_hi": fit.ceiling_hi,
            "b": fit.fit.b,
            "c_mid": fit.fit.c_mid,
            "rmse": fit.fit.rmse,
            "at_double": fit.at_double,
            "tasks": fit.tasks,
        },
    }
