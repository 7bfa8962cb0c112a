"""The study's side-by-side training curves (prorl.study.curves): the series read from a
run's metrics and events, the moving average, and the written figure and data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prorl.study.curves import _smooth, series, write_curves, y_limits


def _run(directory: Path, kl: list[float], resets: list[int]) -> Path:
    directory.mkdir(parents=True)
    rows = [{"step": i + 1, "policy/kl": v, "policy/entropy": 1.0} for i, v in enumerate(kl)]
    rows.append({"step": len(kl), "eval/pass@1": 0.25})
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"step": 9, "policy/kl'  # torn line
    (directory / "metrics.jsonl").write_text(text)
    events = [{"step": s, "event": "reset"} for s in resets] + [{"step": 2, "event": "other"}]
    (directory / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return directory


def test_series_reads_metrics_resets_and_skips_a_torn_line(tmp_path: Path) -> None:
    s = series(_run(tmp_path / "a", [0.1, 0.4, 0.0], resets=[2]))
    assert s["policy/kl"] == [[1, 0.1], [2, 0.4], [3, 0.0]]
    assert s["eval/pass@1"] == [[3, 0.25]] and s["filter/kept_frac"] == []
    assert s["resets"] == [2]


def test_smoothing_is_a_trailing_mean_that_keeps_the_length() -> None:
    # window 3: the first two points average what exists so far
    out = _smooth(np.array([3.0, 0.0, 3.0, 6.0]), 3)
    assert out.tolist() == [3.0, 1.5, 2.0, 3.0]
    assert _smooth(np.array([1.0, 2.0]), 3).tolist() == [1.0, 2.0]  # shorter than the window


def test_write_curves_writes_both_runs(tmp_path: Path) -> None:
    runs = {
        "recipe": _run(tmp_path / "a", [0.1, 0.2], resets=[1]),
        "ablation": _run(tmp_path / "b", [0.3, 0.6], resets=[]),
    }
    png, data = tmp_path / "out" / "curves.png", tmp_path / "out" / "curves.json"
    write_curves(runs, png, data)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(data.read_text())
    assert saved["ablation"]["policy/kl"] == [[1, 0.3], [2, 0.6]]
    assert saved["recipe"]["resets"] == [1]


def test_a_run_without_kl_is_named_on_the_kl_panel(tmp_path: Path) -> None:
    recipe = _run(tmp_path / "a", [0.1, 0.2], resets=[1])
    ablation = tmp_path / "b"  # no KL term: entropy only
    ablation.mkdir()
    (ablation / "metrics.jsonl").write_text('{"step": 1, "policy/entropy": 0.9}\n')
    out = tmp_path / "out"
    absent = write_curves({"recipe": recipe, "ablation": ablation}, out / "c.png", out / "c.json")
    assert absent["policy/kl"] == ["ablation"]
    assert "policy/entropy" not in absent
    assert absent["eval/pass@1"] == ["ablation"]


def test_y_limits_cut_spikes_not_averages() -> None:
    raw = [0.1] * 199 + [8.0]  # one spike in 200 values: the 99th percentile is 0.1
    assert y_limits(raw, top=0.1) == pytest.approx((0.0, 0.105))
    # an average above the percentile stays inside the panel
    assert y_limits(raw, top=0.5) == pytest.approx((0.0, 0.525))
    # negative values: from the lowest; the 99th percentile of [-1, 1] is 0.98
    assert y_limits([-1.0, 1.0], top=0.0) == pytest.approx((-1.0, -1.0 + 1.98 * 1.05))
    assert y_limits([], top=0.0) is None
    assert y_limits([0.0, 0.0], top=0.0) is None
