"""Training curves of several runs side by side: entropy, KL, kept groups and validation
success, with reset markers. Read from each run's ``metrics.jsonl`` and ``events.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

PANELS = (
    ("policy/entropy", "entropy (nats/token)"),
    ("policy/kl", "KL to the reference"),
    ("filter/kept_frac", "kept groups (share)"),
    ("eval/pass@1", "validation success rate"),
)
SMOOTH = 10  # steps in the moving average of the per-step panels (raw values kept in JSON)
CLIP = 99  # per-step panels show up to this percentile: one KL spike of 8 flattens the rest


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by a crash
            continue
    return rows


def series(run: Path) -> dict[str, Any]:
    """{metric: [[step, value], ...]} for the panels' metrics, and the reset steps."""
    out: dict[str, Any] = {key: [] for key, _ in PANELS}
    for row in _jsonl(run / "metrics.jsonl"):
        for key, _ in PANELS:
            if isinstance(row.get(key), int | float):
                out[key].append([int(row["step"]), float(row[key])])
    out["resets"] = [
        int(e["step"]) for e in _jsonl(run / "events.jsonl") if e.get("event") == "reset"
    ]
    return out


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = [values[: i + 1].mean() for i in range(window - 1)]
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def y_limits(raw: list[float], top: float) -> tuple[float, float] | None:
    """A per-step panel's y range: from 0 (or below, for negative values) to the
    ``CLIP``th percentile of the raw values, or the highest average ``top`` if higher, plus
    5 %. None when there is nothing to show."""
    if not raw:
        return None
    low, high = min(0.0, min(raw)), max(top, float(np.percentile(raw, CLIP)))
    return (low, low + (high - low) * 1.05) if high > low else None


def write_curves(runs: dict[str, Path], png: Path, data: Path) -> dict[str, list[str]]:
    """Plot every run (label -> run directory) into ``png``; the series into ``data``.
    Returns, per panel (metric key), the runs that logged nothing for it (the panel says
    so: a run without the KL term keeps no reference and has no KL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_series = {label: series(run) for label, run in runs.items()}
    # constrained layout: the lower panels' titles would sit on the upper panels' x labels
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), layout="constrained")
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    absent: dict[str, list[str]] = {}
    for ax, (key, title) in zip(axes.ravel(), PANELS, strict=True):
        missing = absent.setdefault(key, [])
        raw: list[float] = []
        top = -np.inf
        for i, (label, s) in enumerate(all_series.items()):
            pts = np.array(s[key], dtype=float).reshape(-1, 2)
            if not len(pts):
                missing.append(label)
                continue
            color = colors[i % len(colors)]
            if key.startswith("eval/"):
                ax.plot(pts[:, 0], pts[:, 1], "o-", ms=3, color=color, label=label)
            else:
                ax.plot(pts[:, 0], pts[:, 1], color=color, alpha=0.2, linewidth=0.8)
                smooth = _smooth(pts[:, 1], SMOOTH)
                ax.plot(pts[:, 0], smooth, color=color, label=label)
                raw.extend(pts[:, 1])
                top = max(top, float(smooth.max()))  # the averages are never cut off
            for step in s["resets"]:
                ax.axvline(step, color=color, linestyle=":", linewidth=0.8)
        if missing:  # say so: an empty panel reads as a flat line at 0 or a bug
            ax.text(
                0.98,
                0.97,
                "not logged: " + ", ".join(missing),
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="0.3",
            )
        limits = y_limits(raw, top)
        if limits:
            ax.set_ylim(*limits)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes.ravel():  # one legend for the figure, under the panels: labels can be
        handles, labels = ax.get_legend_handles_labels()  # long (an ablation's overrides)
        if handles:  # and a legend inside a panel hides its curves
            fig.legend(handles, labels, loc="outside lower center", fontsize=8, frameon=False)
            break
    fig.suptitle(
        f"dotted lines: reference resets; per-step panels: faint per step (shown up to the "
        f"{CLIP}th percentile), bold averaged over {SMOOTH} steps",
        fontsize=9,
    )
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    data.write_text(json.dumps(all_series, indent=None) + "\n")
    return {key: labels for key, labels in absent.items() if labels}
