"""The boundary study's analyses on hand-made data: paired changes, only-solved lists,
format-only detection, the gain correlation, the saturating fit and summary.json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from eval_fixtures import write_synthetic
from prorl.evaluate.analysis import load_results, select_models
from prorl.evaluate.boundary import boundaries, gain_correlation, pearson, task_boundary
from prorl.evaluate.compute_fit import compute_fit, fit_saturating, sigmoid_curve, step_of
from prorl.evaluate.report import write_report


def _uid(task: str, i: int) -> str:
    return f"{task}:test:0:{i}"


def test_task_boundary_hand_counts(tmp_path: Path) -> None:
    base = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=float)
    final = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=float)
    write_synthetic(tmp_path, {("b", "t/a"): base, ("f", "t/a"): final}, {"t/a": "math"})
    tb = task_boundary(load_results(tmp_path), "t/a", "b", "f", n_boot=200)
    assert tb is not None
    assert (tb.problems, tb.k_max) == (3, 4)
    s = tb.strict
    # pass@1: 1/12 -> 3/12; pass@4: problem 0 solved by both, problem 1 only by f
    assert s.pass1.base.value == pytest.approx(1 / 12)
    assert s.pass1.final.value == pytest.approx(3 / 12)
    assert s.pass1.delta.value == pytest.approx(2 / 12)
    assert s.boundary.base.value == pytest.approx(1 / 3)
    assert s.boundary.final.value == pytest.approx(2 / 3)
    assert (s.only_final, s.only_base, s.base_solved) == ([_uid("t/a", 1)], [], 1)
    assert s.boundary.delta.lo <= s.boundary.delta.value <= s.boundary.delta.hi
    assert tb.lenient is None  # the texts hold no numbers


def test_format_only_gain_is_flagged(tmp_path: Path) -> None:
    """The base says the right number without the tags (strict 0, lenient 1); the final model
    adds the tags (strict 1). The strict boundary rises, the lenient one does not."""
    p, n = 6, 4
    answers = {"t/n": [str(10 + i) for i in range(p)]}
    texts_base = [[f"so it is {10 + i}"] * n for i in range(p)]
    texts_final = [[f"<answer>{10 + i}</answer>"] * n for i in range(p)]
    write_synthetic(
        tmp_path,
        {("b", "t/n"): np.zeros((p, n)), ("f", "t/n"): np.ones((p, n))},
        {"t/n": "math"},
        texts={("b", "t/n"): texts_base, ("f", "t/n"): texts_final},
        answers=answers,
    )
    (tb,) = boundaries(load_results(tmp_path), n_boot=200)
    assert tb.strict.boundary.delta.value == pytest.approx(1.0)
    assert tb.strict.boundary.significant
    assert tb.lenient is not None
    assert tb.lenient.boundary.delta.value == pytest.approx(0.0)
    assert tb.lenient.base_solved == p and tb.lenient.only_final == []
    assert tb.format_only
    assert len(tb.strict.only_final) == p


def test_pearson_and_gain_correlation_known_answers(tmp_path: Path) -> None:
    x = np.array([0.0, 0.5, 1.0])
    assert pearson(x, np.array([0.4, 0.2, 0.0])) == pytest.approx(-1.0)
    assert pearson(x, np.array([0.1, 0.3, 0.2])) == pytest.approx(0.5)
    assert pearson(x[:2], x[:2]) is None  # too few points
    assert pearson(x, np.zeros(3)) is None  # no spread
    # three tasks, n = 2 (k_max 2): base boundary 0, 1/2, 1 ; final all 1 -> gain 1, 1/2, 0
    z, one = np.zeros((2, 2)), np.ones((2, 2))
    half = np.array([[1.0, 0.0], [0.0, 0.0]])
    write_synthetic(
        tmp_path,
        {
            ("b", "t/x"): z,
            ("b", "t/y"): half,
            ("b", "t/z"): one,
            ("f", "t/x"): one,
            ("f", "t/y"): one,
            ("f", "t/z"): one,
        },
        {"t/x": "a", "t/y": "a", "t/z": "b"},
    )
    corr = gain_correlation(boundaries(load_results(tmp_path), n_boot=50))
    assert corr.tasks == ["t/x", "t/y", "t/z"]
    assert corr.x == pytest.approx([0.0, 0.5, 1.0])
    assert corr.y == pytest.approx([1.0, 0.5, 0.0])
    assert corr.r == pytest.approx(-1.0)
    assert corr.slope == pytest.approx(-1.0)


@pytest.mark.parametrize(("a", "b", "c_mid"), [(0.7, 1.5, 150.0), (0.45, 3.0, 60.0)])
def test_saturating_fit_recovers_known_curve(a: float, b: float, c_mid: float) -> None:
    c = np.array([25.0, 50.0, 100.0, 200.0, 400.0])
    y = sigmoid_curve(c, 0.2, a, b, c_mid)
    fit = fit_saturating(c, y, 0.2)
    assert fit.a == pytest.approx(a, abs=0.01)
    assert fit.b == pytest.approx(b, rel=0.05)
    assert fit.c_mid == pytest.approx(c_mid, rel=0.05)
    assert fit.rmse < 1e-3
    assert float(fit(0.0)[0]) == pytest.approx(0.2)  # R(0) is the base
    with pytest.raises(ValueError):
        fit_saturating(np.array([0.0, 1.0]), np.array([0.1, 0.2]), 0.0)


def test_step_labels() -> None:
    assert step_of("step_000200") == 200
    assert step_of("step-5") == 5
    assert step_of("base") is None and step_of("nokl_step_000200") is None


def _rates(rates: list[float], p: int = 10, n: int = 10) -> np.ndarray:
    """[p, n] rewards whose success rate is exactly each problem's rate (rates cycle)."""
    out = np.zeros((p, n))
    for i in range(p):
        out[i, : round(rates[i % len(rates)] * n)] = 1
    return out


def test_compute_fit_on_checkpoints(tmp_path: Path) -> None:
    # success 0.2 (base), 0.4 @100, 0.5 @200, 0.6 @400: rising and slowing
    curve = {"base": 0.2, "step_000100": 0.4, "step_000200": 0.5, "step_000400": 0.6}
    rewards = {(m, "t/a"): _rates([r]) for m, r in curve.items()}
    rewards[("ablation", "t/a")] = _rates([0.9])  # not a step label: left out of the fit
    write_synthetic(tmp_path, rewards, {"t/a": "math"})
    cf = compute_fit(load_results(tmp_path), n_boot=40)
    assert cf is not None
    assert cf.steps == [0, 100, 200, 400]
    assert cf.models == list(curve)
    assert cf.success == pytest.approx(list(curve.values()))
    assert 0.6 <= cf.fit.a <= 1.0
    assert cf.ceiling_lo <= cf.fit.a + 1e-9 and cf.fit.a - 1e-9 <= cf.ceiling_hi
    assert cf.fit.rmse < 0.03
    assert cf.at_double >= cf.success[-1] - 0.03
    two = select_models(load_results(tmp_path), ["base", "step_000100"])
    assert compute_fit(two) is None  # one trained point is not a curve


def _md_table(md: str, heading: str) -> list[list[str]]:
    block = md.split(heading, 1)[1].split("\n\n", 2)[1]
    rows = [r.strip().strip("|").split("|") for r in block.splitlines() if r.startswith("|")]
    return [[c.strip() for c in r] for r in rows[2:]]


def test_summary_json_counts_reproduce_report_passk(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rewards = {
        (m, t): (rng.random((7, 8)) < q).astype(float)
        for m, q in (("base", 0.1), ("step_000010", 0.3), ("step_000020", 0.4))
        for t in ("t/a", "t/b")
    }
    write_synthetic(tmp_path, rewards, {"t/a": "x", "t/b": "y"}, ks=[1, 2, 4, 8])
    write_report(tmp_path, n_boot=50, out=tmp_path / "rep")
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    md = (tmp_path / "rep" / "summary.md").read_text()
    table = {(r[0], r[1]): r[2:] for r in _md_table(md, "pass@k curves per task (%)")}
    assert summary["ks"] == [1, 2, 4, 8]
    for task, by_model in summary["counts"].items():
        for model, d in by_model.items():
            assert d["c"] == [int(x) for x in rewards[(model, task)].sum(axis=1)]
            for j, k in enumerate(summary["ks"]):
                per = [
                    1 - math.comb(n - c, k) / math.comb(n, k)
                    for n, c in zip(d["n"], d["c"], strict=True)
                ]
                value = sum(per) / len(per)
                assert d["pass_at_k"][str(k)] == pytest.approx(value, abs=1e-12)
                printed = float(re.match(r"[\d.]+", table[(task, model)][j]).group())  # type: ignore[union-attr]
                assert printed == pytest.approx(100 * value, abs=0.051)
    assert {b["task"] for b in summary["boundary"]} == {"t/a", "t/b"}
    assert summary["compute_fit"]["steps"] == [0, 10, 20]
    assert set(summary["regimes"]) == {"t/a", "t/b"}


def test_report_models_option_selects_and_orders(tmp_path: Path) -> None:
    z = np.zeros((2, 2))
    write_synthetic(tmp_path, {("a", "t"): z, ("b", "t"): z, ("c", "t"): z}, {"t": "d"})
    write_report(tmp_path, n_boot=10, models=["a", "c"], out=tmp_path / "ac")
    summary = json.loads((tmp_path / "ac" / "summary.json").read_text())
    assert summary["models"] == ["a", "c"]
    assert summary["boundary"][0]["final"] == "c"
    with pytest.raises(ValueError, match="no results for model zz"):
        write_report(tmp_path, n_boot=10, models=["a", "zz"], out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
