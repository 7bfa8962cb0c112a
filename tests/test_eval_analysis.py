"""Analysis and report over synthetic stored results (no model): regimes, comparisons, files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from eval_fixtures import write_synthetic
from prorl.evaluate import store
from prorl.evaluate.analysis import (
    analyse,
    bootstrap_replicates,
    classify_regime,
    load_results,
    summary_metrics,
)
from prorl.evaluate.report import write_report

KS = [1, 2, 4, 8]


def _curve(p: float, ks: list[int] = KS) -> list[float]:
    """pass@k of a population whose every problem has success probability p (with replacement)."""
    return [1 - (1 - p) ** k for k in ks]


def _classify(*curves: list[float]) -> str:
    return classify_regime([c[0] for c in curves], [c[-1] for c in curves])


def test_regime_diminish_pass1_up_boundary_down() -> None:
    # Math-like: sharper distribution, pass@1 up, but pass@8 falls below the base's.
    base = [0.30, 0.50, 0.70, 0.90]
    mid = [0.45, 0.60, 0.72, 0.85]
    final = [0.55, 0.65, 0.75, 0.80]
    assert _classify(base, mid, final) == "diminish"
    assert _classify(base, final) == "diminish"


def test_regime_plateau_gains_early_then_flat() -> None:
    base, mid = _curve(0.05), _curve(0.30)
    final = [v + 0.005 for v in mid]  # within tolerance of the intermediate
    assert _classify(base, mid, final) == "plateau"


def test_regime_sustained_still_improving_at_the_end() -> None:
    assert _classify(_curve(0.05), _curve(0.15), _curve(0.35)) == "sustained"
    # boundary saturated late but pass@1 keeps rising: still sustained
    assert classify_regime([0.1, 0.4, 0.6], [0.3, 0.99, 1.0]) == "sustained"


def test_regime_two_models_and_bad_input() -> None:
    assert _classify(_curve(0.05), _curve(0.3)) == "expand"
    assert classify_regime([0.1, 0.2], [0.5, 0.51]) == "diminish"  # within tolerance
    # nobody ever succeeded (pass@1 > 0 from partial credit only): no verdict
    assert classify_regime([0.0, 0.03], [0.0, 0.0]) == "unsolved"
    assert classify_regime([0.0, 0.1, 0.0], [0.0, 0.2, 0.0]) == "unsolved"
    assert classify_regime([0.0, 0.0], [0.0, 0.01]) == "diminish"  # one success: within tol
    assert classify_regime([0.2, 0.0], [0.5, 0.0]) == "diminish"  # lost everything
    with pytest.raises(ValueError):
        classify_regime([0.1], [0.2])


def _three_models(tmp_path: Path) -> Path:
    # Hand-built rewards, n = 4: every number below is checkable by hand.
    base = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=float)
    mid = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=float)
    final = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=float)
    zero = np.zeros((2, 4))
    partial = np.full((2, 4), 0.5)  # continuous reward below the success threshold
    data = {
        ("base", "t/a"): base,
        ("mid", "t/a"): mid,
        ("final", "t/a"): final,
        ("base", "t/zero"): zero,
        ("mid", "t/zero"): zero,
        ("final", "t/zero"): np.array([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=float),
        ("base", "t/partial"): partial,
        ("mid", "t/partial"): partial,
        ("final", "t/partial"): partial,
    }
    domains = {"t/a": "math", "t/zero": "logic", "t/partial": "logic"}
    return write_synthetic(tmp_path / "ev", data, domains, ks=[1, 2, 4])


def test_analysis_numbers_by_hand(tmp_path: Path) -> None:
    a = analyse(load_results(_three_models(tmp_path)), n_boot=200, seed=1)
    res = a.results
    assert res.models == ["base", "mid", "final"] and res.ks == [1, 2, 4] and res.n == 4
    base = a.task_curves[("base", "t/a")]
    assert base.pass1 == pytest.approx((0.25 + 0 + 1) / 3)
    assert base.pass1 == pytest.approx(base.passk[0])  # pass@1 is the k = 1 point
    assert base.mean_reward == pytest.approx(base.pass1)  # 0/1 rewards: the same number
    # pass@2 per problem: c=1 -> 1 - C(3,2)/C(4,2) = 0.5; c=0 -> 0; c=4 -> 1
    assert base.passk[1] == pytest.approx(0.5)
    assert base.passk[-1] == pytest.approx(2 / 3)
    assert base.lo[-1] <= base.passk[-1] <= base.hi[-1]
    final = a.task_curves[("final", "t/a")]
    assert final.passk[-1] == pytest.approx(1.0)
    # continuous 0.5 rewards: mean reward 0.5, but never a success at threshold 1: pass@1 0
    part = a.task_curves[("final", "t/partial")]
    assert part.mean_reward == pytest.approx(0.5) and part.mean_reward_lo == pytest.approx(0.5)
    assert part.pass1 == 0.0 and part.passk[-1] == 0.0
    # domain "logic" = macro average of t/zero and t/partial
    logic = a.domain_curves[("final", "logic")]
    zero_final = a.task_curves[("final", "t/zero")]
    assert zero_final.pass1 == pytest.approx(1 / 8)
    assert logic.pass1 == pytest.approx((1 / 8 + 0) / 2)
    assert logic.mean_reward == pytest.approx((1 / 8 + 0.5) / 2)

    comps = {c.task: c for c in a.comparisons}
    assert comps["t/a"].newly_solved == {"mid": [], "final": ["t/a:test:0:1"]}
    assert comps["t/a"].regime == "sustained"  # boundary 2/3 -> 2/3 -> 1, pass@1 rising late
    assert comps["t/zero"].base_all_zero and not comps["t/a"].base_all_zero
    # never a success at threshold 1 for any model, though the mean reward is 0.5
    assert comps["t/partial"].regime == "unsolved"
    assert comps["t/partial"].pass1 == [0.0, 0.0, 0.0]
    assert comps["t/partial"].mean_reward == pytest.approx([0.5, 0.5, 0.5])
    np.testing.assert_array_equal(a.histograms[("base", "t/a")], [1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    m = summary_metrics(a, "final")
    assert m["eval/t/a/pass@1"] == pytest.approx(final.pass1)
    assert m["eval/t/a/pass@4"] == pytest.approx(1.0)
    assert m["eval/t/partial/pass@1"] == 0.0
    assert m["eval/t/partial/mean_reward"] == pytest.approx(0.5)
    # rows written before the floor and the format flag existed: neither metric, no guess
    assert not any(k.endswith(("/floor", "/format_rate")) for k in m)
    assert all(f is None for f in a.floors.values())
    # the threshold is an analysis setting: at 0.5 the partial task succeeds everywhere
    a_half = analyse(load_results(res.directory, threshold=0.5), n_boot=50)
    assert a_half.task_curves[("final", "t/partial")].passk[-1] == pytest.approx(1.0)


def test_comparison_uses_problems_every_model_has(tmp_path: Path) -> None:
    # The final model was evaluated on two extra (easy) problems: they must not count.
    base = np.array([[1, 0], [0, 0]], dtype=float)
    final = np.array([[1, 0], [0, 0], [1, 1], [1, 1]], dtype=float)
    d = write_synthetic(tmp_path / "ev", {("b", "t"): base, ("f", "t"): final}, {"t": "x"})
    a = analyse(load_results(d), n_boot=20)
    assert a.task_curves[("f", "t")].pass1 == pytest.approx(0.625)  # its own table: all 4
    (c,) = a.comparisons
    assert c.pass1 == [0.25, 0.25] and c.boundary == [0.5, 0.5] and c.regime == "diminish"


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = np.random.default_rng(0).random((50, 3))
    r1 = bootstrap_replicates(values, 500, seed=7)
    r2 = bootstrap_replicates(values, 500, seed=7)
    np.testing.assert_array_equal(r1, r2)
    assert r1.shape == (500, 3)
    lo, hi = np.percentile(r1, [2.5, 97.5], axis=0)
    assert np.all(lo < values.mean(axis=0)) and np.all(values.mean(axis=0) < hi)
    assert not np.array_equal(r1, bootstrap_replicates(values, 500, seed=8))


def test_report_files_name_every_task_and_are_self_contained(tmp_path: Path) -> None:
    d = _three_models(tmp_path)
    html_path, md_path = write_report(d, n_boot=100)
    page, md = html_path.read_text(), md_path.read_text()
    for task in ("t/a", "t/zero", "t/partial"):
        assert task in page and task in md
    assert "sustained" in md and "diminish" in md
    assert "Tasks where the base scores 0 at every k" in md and "| t/zero |" in md
    assert page.count("data:image/png;base64,") >= 3 + 3 + 2 + 1  # curves, hists, domains
    # nothing fetched from the network when the page is opened
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_report_on_empty_or_missing_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no evaluation results"):
        write_report(tmp_path)
    store.write_manifest(
        tmp_path, {"version": store.FORMAT_VERSION, "models": [], "tasks": [], "n": 4}
    )
    with pytest.raises(ValueError, match="no finished problems"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_run_dir_with_eval_subdir_is_found(tmp_path: Path) -> None:
    _three_models(tmp_path)  # writes tmp_path/ev
    (tmp_path / "ev").rename(tmp_path / "eval")
    assert load_results(tmp_path).directory == tmp_path / "eval"


def test_truncated_last_line_is_skipped_and_repaired_on_append(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store.append_rows(path, [{"index": 0}, {"index": 1}])
    with path.open("a") as f:
        f.write('{"index": 2, "sam')  # a crash mid-write
    assert [r["index"] for r in store.read_rows(path)] == [0, 1]
    store.append_rows(path, [{"index": 2}])
    assert [r["index"] for r in store.read_rows(path)] == [0, 1, 2]
    path.write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(ValueError, match="line 2 is corrupt"):
        store.read_rows(path)


def test_pass1_is_success_rate_and_mean_reward_is_separate(tmp_path: Path) -> None:
    rewards = np.array([[0.5, 1.0], [0.0, 0.0]])
    d = write_synthetic(tmp_path / "ev", {("m", "t"): rewards}, {"t": "x"}, ks=[1, 2])
    a = analyse(load_results(d), n_boot=50)
    c = a.task_curves[("m", "t")]
    # one success (1.0 >= threshold 1) in four samples; rewards average 1.5 / 4
    assert c.pass1 == pytest.approx(0.25) and c.passk[0] == pytest.approx(0.25)
    assert c.mean_reward == pytest.approx(0.375)
    assert c.pass1_lo <= c.pass1 <= c.pass1_hi
    assert c.mean_reward_lo <= c.mean_reward <= c.mean_reward_hi
    assert summary_metrics(a, "m") == pytest.approx(
        {"eval/t/pass@1": 0.25, "eval/t/pass@2": 0.5, "eval/t/mean_reward": 0.375}
    )
    # per-problem pass@1 (0.5 and 0), not the per-problem mean reward (0.75 and 0)
    np.testing.assert_array_equal(a.histograms[("m", "t")], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0])


def _zero_floor() -> dict[str, float]:
    return {"empty": 0.0, "format": 0.0, "junk": 0.0, "echo": 0.0}


def test_floor_and_format_rate_from_rows(tmp_path: Path) -> None:
    rewards = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    floors = [_zero_floor() for _ in range(4)]
    floors[2]["echo"] = 1.0  # the echoed prompt passes on one of four problems
    floors[0]["format"] = 0.5  # partial credit for the bare format: not a success
    formatted: list[list[bool | None]] = [[True, False], [None, None], [True, True], [False, None]]
    d = write_synthetic(
        tmp_path / "ev",
        {("m", "t"): rewards, ("m", "old"): rewards},
        {"t": "x", "old": "x"},
        ks=[1, 2],
        floors={("m", "t"): floors},
        formatted={("m", "t"): formatted},
    )
    a = analyse(load_results(d), n_boot=20)
    f = a.floors[("m", "t")]
    assert f is not None and f.problems == 4
    assert f.policy == "echo" and f.value == pytest.approx(0.25)
    assert f.success == pytest.approx({"empty": 0.0, "format": 0.0, "junk": 0.0, "echo": 0.25})
    assert f.mean_reward["format"] == pytest.approx(0.125)
    assert a.floors[("m", "old")] is None
    m = summary_metrics(a, "m")
    assert set(m) == {
        "eval/t/pass@1",
        "eval/t/pass@2",
        "eval/t/mean_reward",
        "eval/t/floor",
        "eval/t/format_rate",
        "eval/old/pass@1",
        "eval/old/pass@2",
        "eval/old/mean_reward",
    }
    assert m["eval/t/floor"] == pytest.approx(0.25)
    assert m["eval/t/format_rate"] == pytest.approx(3 / 5)  # 3 true of 5 non-null flags
    assert m["eval/t/pass@1"] == pytest.approx(0.5)


def test_floor_over_the_rows_that_carry_it(tmp_path: Path) -> None:
    # A results file resumed across the change: the first problem's row has no floor.
    d = write_synthetic(
        tmp_path / "ev",
        {("m", "t"): np.zeros((3, 2))},
        {"t": "x"},
        floors={("m", "t"): [_zero_floor()] * 3},
        formatted={("m", "t"): [[None, None]] * 3},
    )
    path = store.results_path(d, "m", "t")
    rows = store.read_rows(path)
    del rows[0]["floor"]
    rows[1]["floor"]["empty"] = 1.0
    path.unlink()
    store.append_rows(path, rows)
    a = analyse(load_results(d), n_boot=10)
    f = a.floors[("m", "t")]
    assert f is not None and f.problems == 2
    assert (f.policy, f.value) == ("empty", 0.5)
    # every flag null (a task without an answer format): no format rate
    assert "eval/t/format_rate" not in summary_metrics(a, "m")
    assert summary_metrics(a, "m")["eval/t/floor"] == 0.5


def test_report_shows_mean_reward_floor_table_and_source(tmp_path: Path) -> None:
    rewards = np.array([[0.5, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    floors = [_zero_floor() for _ in range(4)]
    floors[3]["echo"] = 1.0
    spec = "run runs/cpu-smollm2 at step 12"
    d = write_synthetic(
        tmp_path / "ev",
        {("base", "t"): rewards, ("step_000012", "t"): rewards, ("base", "old"): rewards},
        {"t": "x", "old": "x"},
        ks=[1, 2],
        floors={("base", "t"): floors, ("step_000012", "t"): floors},
        formatted={("base", "t"): [[True, True]] * 4},
        specs={"base": "smollm2-135m", "step_000012": spec},
    )
    html_path, md_path = write_report(d, n_boot=20)
    md, page = md_path.read_text(), html_path.read_text()
    assert "| model (in order) | source |" in md
    assert f"| step_000012 | {spec} |" in md and spec in page
    assert "mean reward" in md and "pass@1 = success rate" in md
    # results per task: pass@1 3 of 8 samples, mean reward 3.5 / 8, floor echo 1 of 4
    assert "| t | x | base | 4 | 37.5 [" in md and "] | 43.8 [" in md
    assert "| 25.0 (echo) | 100.0 |" in md  # floor, then formatted %
    # the floor table: one row for both models (same floor), every trivial policy
    assert "Null floor: trivial responses per task" in md
    assert "| task | model | problems | empty | format-only | junk | echo | floor |" in md
    row = "| t | all models | 4 | 0.0 (0.0) | 0.0 (0.0) | 0.0 (0.0) | 25.0 (25.0) | 25.0 (echo) |"
    assert row in md
    # the comparison shows mean reward beside pass@1, and the floor
    assert "| t | 37.5 -> 37.5 | +0.0 | 43.8 -> 43.8 | 50.0 -> 50.0 | +0.0 | 25.0 (echo) |" in md
    # the old task has no floor: "-" beside its score, no floor row
    assert "| old | x | base | 4 | 37.5 [" in md
    assert "| - | - |" in md  # floor and formatted % unknown
    assert "| old | all models |" not in md and "| old | base | 4 |" not in md
