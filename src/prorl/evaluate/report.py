"""``prorl report DIR``: a self-contained HTML report, a Markdown summary and summary.json.

The HTML embeds every figure as a base64 PNG and carries its CSS inline: it opens offline,
from a mail attachment or a CI artefact. Both files are written to a temp file and renamed,
so an interrupted report never leaves half a file over a good one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from prorl.evaluate import plots, store
from prorl.evaluate.analysis import (
    FLOOR_NAMES,
    FLOOR_POLICIES,
    HIST_EDGES,
    Analysis,
    Curve,
    Floor,
    analyse,
    load_results,
    problem_pass1,
    select_models,
)
from prorl.evaluate.doc import Doc

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:32px}table{border-collapse:collapse;margin:8px 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}.grid{display:flex;flex-wrap:wrap;
gap:12px}.grid figure{margin:0}img{max-width:100%;border:1px solid #eee}
.muted{color:#666;font-size:0.9em}.diminish{color:#b03a2e}.sustained{color:#1e8449}
.plateau{color:#b9770e}.expand{color:#1f618d}code{background:#f6f6f6;padding:1px 3px}
"""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(value: float, lo: float, hi: float) -> str:
    return f"{_pct(value)} [{_pct(lo)}, {_pct(hi)}]"


def _floor_cell(f: Floor | None) -> str:
    """The floor beside a score: the best trivial policy's success rate, or "-" (unknown)."""
    return "-" if f is None else f"{_pct(f.value)} ({FLOOR_NAMES[f.policy]})"


def _opt_pct(x: float | None) -> str:
    return "-" if x is None else _pct(x)


def _results_rows(a: Analysis) -> list[list[str]]:
    res = a.results
    rows = []
    for task in res.tasks:
        for m in res.models:
            if (m, task) not in a.task_curves:
                continue
            c, tr = a.task_curves[(m, task)], res.data[(m, task)]
            rows.append(
                [
                    task,
                    res.domains[task],
                    m,
                    str(c.problems),
                    _ci(c.pass1, c.pass1_lo, c.pass1_hi),
                    _ci(c.mean_reward, c.mean_reward_lo, c.mean_reward_hi),
                    _ci(float(c.passk[-1]), float(c.lo[-1]), float(c.hi[-1])),
                    _floor_cell(a.floors.get((m, task))),
                    _opt_pct(tr.format_rate()),
                    _opt_pct(tr.lenient_rate()),
                    f"{tr.num_tokens.mean():.0f}",
                    _pct(float(tr.truncated.mean())),
                ]
            )
    return rows


def _curve_cells(c: Curve) -> list[str]:
    return [_pct(float(v)) for v in c.passk]


def _settings(a: Analysis) -> list[str]:
    man = a.results.manifest
    s = man.get("sampling", {})
    return [
        f"n = {a.results.n} samples per problem; split {man.get('split', '?')}; "
        f"temperature {s.get('temperature', '?')}, top_p {s.get('top_p', '?')}, "
        f"max_new_tokens {s.get('max_new_tokens', '?')}; seed {man.get('seed', '?')}.",
        f"pass@1 = success rate: the share of samples with reward >= "
        f"{a.results.threshold:g}, the k = 1 point of the pass@k curves (unbiased estimator "
        "on successes). mean reward = the average reward (partial credit where the task "
        "gives it); it is not pass@1. floor = the null floor: the success rate of the best "
        "of four trivial responses (empty, format-only, junk, echo) on the same problems, "
        "'-' where the results predate it; a score at or near it shows nothing learnt. "
        "formatted % = share of samples answering in the task's format ('-' where the task "
        "has none or the results predate it). lenient = the success rate when the last "
        "number anywhere in the response is read as the answer (numeric answers only): a "
        "strict pass@1 that rises only up to the base's lenient rate may be format learning. "
        "guessing floor (the black ticks in the overview) = the pass@k of a guesser that "
        "never reads the question and draws from the model's own final numbers on the "
        "task's other problems: a pass@k at or under it is answer spread, not solving.",
        "Intervals: 95 % percentile bootstrap over problems. Regimes read the boundary "
        f"(pass@{a.results.ks[-1]}) and pass@1, success rates both (never the mean reward), "
        f"with tolerance {a.tolerance:g} (rule in the comparison section; docs/evaluation.md).",
    ]


def build(a: Analysis, extra: Callable[[Doc], None] | None = None) -> Doc:
    """Lay out the report; every section is written to both HTML and Markdown. ``extra``
    adds sections after the comparison (the boundary study's)."""
    res, kmax = a.results, a.results.ks[-1]
    doc = Doc()
    doc.heading("prorl evaluation report", 1)
    doc.para(
        f"{res.directory} - generated {dt.datetime.now().isoformat(timespec='seconds')}", "muted"
    )
    specs = {m["label"]: m.get("spec", "") for m in res.manifest.get("models", [])}
    doc.table(["model (in order)", "source"], [[m, specs.get(m, "")] for m in res.models])
    for line in _settings(a):
        doc.para(line, "muted")
    doc.images([("overview", plots.overview_plot(a))])

    doc.heading("Results per task (%, 95 % CI)")
    headers = ["task", "domain", "model", "problems", "pass@1", "mean reward", f"pass@{kmax}"]
    tail = ["floor", "formatted %", "lenient", "mean tokens", "truncated %"]
    doc.table([*headers, *tail], _results_rows(a))
    _floors(doc, a)
    doc.heading("pass@k curves per task (%)")
    rows = [
        [t, m, *_curve_cells(a.task_curves[(m, t)])]
        for t in res.tasks
        for m in res.models
        if (m, t) in a.task_curves
    ]
    doc.table(["task", "model", *[f"k={k}" for k in res.ks]], rows)
    doc.images([(t, plots.passk_plot(a, t)) for t in res.tasks])

    domains = sorted({d for (_, d) in a.domain_curves})
    doc.heading("Per domain (macro average over tasks, %)")
    rows = [
        [
            d,
            m,
            _ci(c.pass1, c.pass1_lo, c.pass1_hi),
            _ci(c.mean_reward, c.mean_reward_lo, c.mean_reward_hi),
            _ci(float(c.passk[-1]), float(c.lo[-1]), float(c.hi[-1])),
        ]
        for d in domains
        for m in res.models
        if (c := a.domain_curves.get((m, d))) is not None
    ]
    doc.table(["domain", "model", "pass@1", "mean reward", f"pass@{kmax}"], rows)
    doc.images([(d, plots.domain_plot(a, d)) for d in domains])

    _comparison(doc, a)
    if extra is not None:
        extra(doc)
    _distribution(doc, a)
    return doc


def _floors(doc: Doc, a: Analysis) -> None:
    """Every trivial policy per task: success rate % (mean reward %)."""
    res = a.results
    doc.heading("Null floor: trivial responses per task (%)", 3)
    rows = []
    for t in res.tasks:
        models = [m for m in res.models if (m, t) in res.data]
        known = [(m, f) for m in models if (f := a.floors.get((m, t))) is not None]
        groups: list[tuple[list[str], Floor]] = []
        for m, f in known:  # models with the same floor (the usual case) share one row
            same = next((g for g in groups if g[1] == f), None)
            if same is None:
                groups.append(([m], f))
            else:
                same[0].append(m)
        for ms, f in groups:
            who = "all models" if len(ms) == len(models) > 1 else ", ".join(ms)
            cells = [
                f"{_pct(f.success[p])} ({_pct(f.mean_reward[p])})" if p in f.success else "-"
                for p in FLOOR_POLICIES
            ]
            rows.append([t, who, str(f.problems), *cells, _floor_cell(f), _constant_cell(a, t)])
    if not rows:
        doc.para(
            "No null floor stored: these results were written before prorl eval scored "
            "trivial responses."
        )
        return
    doc.para(
        "Each cell: success rate (mean reward) of one trivial response given to every "
        "problem: empty = the empty response; format-only = the task's answer format around "
        "nothing; junk = the format around a junk string; echo = the question copied back. "
        "floor = the best of them. one answer = the share of problems whose reference is "
        "the task's most common one (given after it): what a policy that answers the same "
        "whatever the question collects at most (numeric answers; '-' otherwise). It is not "
        "part of the floor; a high value marks a task where reward can be had without "
        "reading the question."
    )
    names = [FLOOR_NAMES[p] for p in FLOOR_POLICIES]
    doc.table(["task", "model", "problems", *names, "floor", "one answer"], rows)


def _constant_cell(a: Analysis, task: str) -> str:
    c = a.results.constant(task)
    return "-" if c is None else f"{_pct(c[1])} ({c[0]})"


def _comparison(doc: Doc, a: Analysis) -> None:
    res, kmax = a.results, a.results.ks[-1]
    doc.heading("Comparison: base vs later models")
    if not a.comparisons:
        doc.para(
            "Only one model was evaluated: nothing to compare. Evaluate a trained "
            "checkpoint into the same directory to get regimes and newly solved problems."
        )
        return
    doc.para(
        f"Base: {res.models[0]}; final: {res.models[-1]}. Regime rule: unsolved if neither "
        f"succeeded on any problem (pass@{kmax} 0 for both); diminish if "
        f"pass@{kmax} did not rise by more than {a.tolerance:g}; otherwise sustained if "
        "pass@1 or the boundary still rose after the intermediate model, else plateau "
        "(expand: no intermediate model to tell)."
    )
    rows = []
    for c in a.comparisons:
        solved = c.newly_solved.get(c.models[-1], [])
        rows.append(
            [
                c.task,
                " -> ".join(_pct(v) for v in c.pass1),
                f"{100 * c.delta_pass1:+.1f}",
                " -> ".join(_pct(v) for v in c.mean_reward),
                " -> ".join(_pct(v) for v in c.boundary),
                f"{100 * c.delta_boundary:+.1f}",
                _floor_cell(a.task_floor(c.task)),
                c.regime,
                str(len(solved)),
            ]
        )
    headers = ["task", "pass@1", "delta", "mean reward", f"pass@{kmax}", "delta", "floor"]
    doc.table([*headers, "regime", "newly solved (final)"], rows)
    zero = [c for c in a.comparisons if c.base_all_zero]
    doc.heading("Tasks where the base scores 0 at every k", 3)
    if not zero:
        doc.para("None: the base solved at least one problem of every task.")
    else:
        doc.table(
            ["task", *[f"pass@{kmax} {m}" for m in zero[0].models[1:]]],
            [[c.task, *[_pct(v) for v in c.boundary[1:]]] for c in zero],
        )
    doc.heading(f"Problems a later model solved that the base never solved in {res.n} samples", 3)
    rows = []
    for c in a.comparisons:
        for m, uids in c.newly_solved.items():
            questions = dict(
                zip(res.data[(m, c.task)].uids, res.data[(m, c.task)].questions, strict=True)
            )
            for u in uids[:5]:
                q = " ".join(questions.get(u, "").split())
                rows.append([c.task, m, u, q[:140] + ("..." if len(q) > 140 else "")])
    if rows:
        doc.table(["task", "model", "problem", "question (first 5 per task and model)"], rows)
    else:
        doc.para("None.")


def _distribution(doc: Doc, a: Analysis) -> None:
    res = a.results
    doc.heading("Distribution of per-problem pass@1")
    doc.para(
        f"Per-problem pass@1: the share of a problem's {res.n} samples that succeed "
        f"(reward >= {res.threshold:g})."
    )
    bins = [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(HIST_EDGES[:-1], HIST_EDGES[1:], strict=True)]
    rows = []
    for t in res.tasks:
        for m in res.models:
            if (m, t) in a.histograms:
                per = problem_pass1(res.data[(m, t)], res.threshold)
                rows.append(
                    [
                        t,
                        m,
                        _pct(float((per == 0).mean())),
                        _pct(float((per == 1).mean())),
                        *[str(int(x)) for x in a.histograms[(m, t)]],
                    ]
                )
    doc.table(["task", "model", "% at 0", "% at 1", *bins], rows)
    doc.images([(f"{t} histogram", plots.histogram_plot(a, t)) for t in res.tasks])


def write_report(
    directory: Path | str,
    *,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    tolerance: float = 0.02,
    models: Sequence[str] | None = None,
    out: Path | str | None = None,
) -> tuple[Path, Path]:
    """Write ``report.html``, ``summary.md`` and ``summary.json`` into ``out`` (default: the
    evaluation directory); return the first two paths. ``models`` picks and orders the
    models compared (default: all, in evaluation order; the first is the base, the last the
    final model).

    Raises ValueError (nothing written) when the directory holds no results.
    """
    from prorl.evaluate import report_boundary
    from prorl.evaluate.boundary import above_guessing, boundaries, gain_correlation
    from prorl.evaluate.compute_fit import compute_fit

    results = load_results(directory, threshold)
    if models:
        results = select_models(results, models)
    a = analyse(results, n_boot=n_boot, seed=seed, tolerance=tolerance)
    tbs = boundaries(results, n_boot=max(n_boot, 1000), seed=seed)
    corrs = {rd: gain_correlation(tbs, rd) for rd in ("strict", "lenient")}
    corrs = {rd: c for rd, c in corrs.items() if c.tasks}
    fit = compute_fit(results, seed=seed)
    k_max = tbs[0].k_max if tbs else results.ks[-1]
    guess = {
        key: {
            k: g
            for k in sorted({1, k_max})
            if (g := above_guessing(tr, k, results.threshold, max(n_boot, 1000), seed))
        }
        for key, tr in results.data.items()
    }
    doc = build(a, lambda d: report_boundary.section(d, a, tbs, corrs, fit, guess))
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>prorl evaluation report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(doc.html)}</body></html>\n"
    )
    target = Path(out) if out is not None else a.results.directory
    target.mkdir(parents=True, exist_ok=True)
    html_path, md_path = target / "report.html", target / "summary.md"
    store.write_atomic(html_path, page.encode("utf-8"))
    store.write_atomic(md_path, ("\n".join(doc.md).lstrip() + "\n").encode("utf-8"))
    summary = report_boundary.summary(a, tbs, corrs, fit, guess)
    store.write_atomic(target / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    return html_path, md_path
