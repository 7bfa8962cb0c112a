"""Report figures with matplotlib's Agg backend (no display, no torch), returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display, safe in worker processes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from prorl.evaluate.analysis import FLOOR_NAMES, HIST_EDGES, Analysis, Curve  # noqa: E402
from prorl.evaluate.boundary import Correlation  # noqa: E402
from prorl.evaluate.compute_fit import ComputeFit  # noqa: E402

_COLORS = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _curve_axes(ax: plt.Axes, curves: list[tuple[str, Curve]], title: str) -> None:
    for i, (label, c) in enumerate(curves):
        color = _COLORS[i % len(_COLORS)]
        ax.plot(c.ks, c.passk, marker="o", ms=3, color=color, label=f"{label} (P={c.problems})")
        ax.fill_between(c.ks, c.lo, c.hi, color=color, alpha=0.15, linewidth=0)
    ks = curves[0][1].ks if curves else [1]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks], fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def passk_plot(analysis: Analysis, task: str) -> bytes:
    """pass@k against k (log scale) for every model on ``task``, 95 % bootstrap bands, and
    the null floor as a dashed line (a trivial response is deterministic: its pass@k is the
    same for every k)."""
    curves = [
        (m, analysis.task_curves[(m, task)])
        for m in analysis.results.models
        if (m, task) in analysis.task_curves
    ]
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    floor = analysis.task_floor(task)
    if floor is not None:
        ax.axhline(
            floor.value,
            color="0.4",
            linestyle="--",
            linewidth=1,
            label=f"null floor ({FLOOR_NAMES[floor.policy]})",
        )
    _curve_axes(ax, curves, task)
    return to_png(fig)


def domain_plot(analysis: Analysis, domain: str) -> bytes:
    curves = [
        (m, analysis.domain_curves[(m, domain)])
        for m in analysis.results.models
        if (m, domain) in analysis.domain_curves
    ]
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    _curve_axes(ax, curves, f"domain: {domain} (macro average)")
    return to_png(fig)


def histogram_plot(analysis: Analysis, task: str) -> bytes:
    """Distribution of per-problem pass@1 (share of n samples that succeed), one bar per
    model."""
    models = [m for m in analysis.results.models if (m, task) in analysis.histograms]
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    width = 0.1 / max(1, len(models))
    lefts = HIST_EDGES[:-1]
    for i, m in enumerate(models):
        counts = analysis.histograms[(m, task)]
        share = counts / max(1, counts.sum())
        ax.bar(
            lefts + i * width,
            share,
            width=width,
            align="edge",
            color=_COLORS[i % len(_COLORS)],
            label=m,
        )
    ax.set_xticks(HIST_EDGES)
    ax.set_xticklabels([f"{e:.1f}" for e in HIST_EDGES], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("per-problem pass@1")
    ax.set_ylabel("share of problems")
    ax.set_title(f"{task}: per-problem pass@1", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return to_png(fig)


def overview_plot(analysis: Analysis) -> bytes:
    """pass@1 (success rate) and pass@k_max per task and model, side by side: the whole run
    at a glance. A black tick on a bar marks that model's question-blind guessing floor at
    the same k (tasks with numeric answers): a pass@k_max bar that does not pass its tick
    is answer spread, a pass@1 bar at its tick is one answer given whatever the question."""
    res = analysis.results
    tasks, models = res.tasks, res.models
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 0.45 * len(tasks) + 1.6), sharey=True)
    y = np.arange(len(tasks))
    h = 0.8 / max(1, len(models))
    ticked = False
    for col, (ax, title) in enumerate(zip(axes, ("pass@1", f"pass@{res.ks[-1]}"), strict=True)):
        for i, m in enumerate(models):
            vals = [
                np.nan
                if (m, t) not in analysis.task_curves
                else (
                    analysis.task_curves[(m, t)].pass1
                    if col == 0
                    else float(analysis.task_curves[(m, t)].passk[-1])
                )
                for t in tasks
            ]
            ax.barh(y + i * h, vals, height=h, color=_COLORS[i % len(_COLORS)], label=m)
            k = 1 if col == 0 else res.ks[-1]
            ticked = _floor_ticks(ax, analysis, m, k, y + i * h, h) or ticked
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y + 0.4 - h / 2)
    axes[0].set_yticklabels(tasks, fontsize=8)
    axes[0].invert_yaxis()
    # Above the panels: inside them the legend would cover the longest bars.
    handles, labels = axes[0].get_legend_handles_labels()
    if ticked:
        handles.append(Line2D([], [], color="black", linewidth=1.5))
        labels.append(_FLOOR_LABEL)
    fig.legend(
        handles,
        labels,
        fontsize=8,
        loc="lower center",
        ncol=min(len(handles), 7),
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    return to_png(fig)


_FLOOR_LABEL = "guessing floor"


def _floor_ticks(
    ax: plt.Axes, analysis: Analysis, model: str, k: int, ys: np.ndarray, h: float
) -> bool:
    """Tick each of ``model``'s pass@k bars at its guessing floor at k; True if any drawn."""
    res = analysis.results
    drawn = False
    for yi, t in zip(ys, res.tasks, strict=True):
        tr = res.data.get((model, t))
        floor = None if tr is None else tr.blind_pass_at(k)
        if floor is not None:
            ax.vlines(floor, yi - h / 2, yi + h / 2, colors="black", linewidth=1.5)
            drawn = True
    return drawn


def gain_plot(corr: Correlation, k_max: int, reading: str) -> bytes:
    """pass@k_max gain (final - base) against the base's pass@k_max, one point per task,
    with the least-squares line and Pearson's r."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.scatter(corr.x, corr.y, color=_COLORS[0], zorder=3)
    for x, y, t in zip(corr.x, corr.y, corr.tasks, strict=True):
        name = t.removeprefix("rg/")
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    title = f"pass@{k_max} gain vs base ({reading})"
    if corr.r is not None and corr.slope is not None:
        xs = np.linspace(0, 1, 2)
        intercept = float(np.mean(corr.y) - corr.slope * np.mean(corr.x))
        ax.plot(xs, intercept + corr.slope * xs, color=_COLORS[1], linestyle="--", linewidth=1)
        title += f": r = {corr.r:+.2f}"
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"base pass@{k_max}")
    ax.set_ylabel(f"final - base pass@{k_max}")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return to_png(fig)


def compute_fit_plot(cf: ComputeFit) -> bytes:
    """Measured macro success rate against training steps, the fitted saturating curve out
    to twice the compute measured, and the ceiling with its 95 % interval."""
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    xs = np.linspace(0, 2 * max(cf.steps), 200)
    ax.axhspan(cf.ceiling_lo, cf.ceiling_hi, color=_COLORS[2], alpha=0.12, linewidth=0)
    label = f"ceiling {cf.fit.a:.2f} [{cf.ceiling_lo:.2f}, {cf.ceiling_hi:.2f}]"
    ax.axhline(cf.fit.a, color=_COLORS[2], linestyle=":", linewidth=1, label=label)
    ax.plot(xs, cf.fit(xs), color=_COLORS[1], linestyle="--", linewidth=1, label="fit")
    ax.plot(cf.steps, cf.success, "o", color=_COLORS[0], label="measured")
    ax.axvline(max(cf.steps), color="0.6", linewidth=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("success rate (macro over tasks)")
    ax.set_title("validation success against compute", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return to_png(fig)
