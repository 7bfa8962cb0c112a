import json
from dataclasses import replace
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest

from eval_fixtures import write_synthetic
from prorl.evaluate.analysis import load_results
from prorl.evaluate.blind import best_constant, blind_pass_at_k, blind_success_probs
from prorl.evaluate.boundary import PairedChange, Reading, TaskBoundary, above_guessing
from prorl.evaluate.change import Interval
from prorl.evaluate.report import write_report
from prorl.evaluate.report_boundary import guessing_only, pass1_guessing_only
from prorl.study.published import publish_model, restore


def test_blind_floor_hand_computed() -> None:
    # pool of all 6 answers: 1 x3, 2 x1, 3 x1, None x1; each problem sees the other 4
    answers = [[F(1), F(2)], [F(1), F(1)], [F(3), None]]
    refs = [F(1), F(3), F(2)]
    assert blind_success_probs(answers, refs) == [0.5, 0.25, 0.25]
    assert blind_pass_at_k(answers, refs, 1) == pytest.approx(1 / 3)
    # k = 2: 1 - 0.5^2 = 0.75, 1 - 0.75^2 = 0.4375 twice
    assert blind_pass_at_k(answers, refs, 2) == pytest.approx((0.75 + 0.4375 + 0.4375) / 3)


def test_blind_floor_ignores_a_problems_own_answers() -> None:
    # each problem answers itself right, and no other problem shares its reference
    answers = [[F(1)] * 4, [F(2)] * 4]
    assert blind_pass_at_k(answers, [F(1), F(2)], 128) == 0.0


def test_blind_floor_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="answer lists"):
        blind_success_probs([[F(1)]], [F(1), F(2)])
    with pytest.raises(ValueError, match="k must be"):
        blind_pass_at_k([[F(1)]], [F(1)], 0)


TASK = "rg/small"


def _spreader_and_reader(directory: Path) -> Path:
    """4 problems with answers 1, 2, 1, 2 and 2 samples each: the spreader writes 1 and 2
    on every problem without reading it; the reader writes each problem's own answer."""
    answers = ["1", "2", "1", "2"]
    texts = {
        ("spreader", TASK): [["it is 1", "it is 2"]] * 4,
        ("reader", TASK): [[f"so {a}", f"so {a}"] for a in answers],
    }
    rewards = {key: np.zeros((4, 2)) for key in texts}  # strict reading: never in format
    return write_synthetic(
        directory, rewards, {TASK: "arithmetic"}, ks=[1, 2], texts=texts, answers={TASK: answers}
    )


def test_guessing_floor_separates_a_spreader_from_a_reader(tmp_path: Path) -> None:
    res = load_results(_spreader_and_reader(tmp_path / "eval"))
    spreader, reader = res.data[("spreader", TASK)], res.data[("reader", TASK)]
    # spreader: every problem's other 6 answers are three 1s and three 2s -> p = 1/2
    assert spreader.blind_p is not None and spreader.blind_p.tolist() == [0.5] * 4
    # reader: problem 0 (answer 1) sees 2, 2, 1, 1, 2, 2 -> p = 1/3; likewise for all
    assert reader.blind_p is not None
    assert reader.blind_p.tolist() == pytest.approx([1 / 3] * 4)
    assert reader.blind_pass_at(2) == pytest.approx(1 - (2 / 3) ** 2)

    g = above_guessing(spreader, 1, res.threshold, n_boot=200)
    assert g is not None  # pass@1 = 1/2 = the floor: the spreader is at the floor
    assert g.final.value == pytest.approx(0.5) and g.delta.value == pytest.approx(0.0)
    assert not g.delta.lo > 0
    g = above_guessing(reader, 1, res.threshold, n_boot=200)
    assert g is not None and g.delta.value == pytest.approx(2 / 3) and g.delta.lo > 0
    assert above_guessing(reader, 3, res.threshold) is None  # k beyond n = 2


def test_guessing_floor_survives_publishing_and_reaches_summary_json(tmp_path: Path) -> None:
    original = _spreader_and_reader(tmp_path / "eval")
    dest = tmp_path / "published"
    for model in ("spreader", "reader"):
        publish_model(original, dest, model)
    fresh = tmp_path / "restored"
    restore(dest, fresh)  # rows without texts: the floor comes from the kept final numbers
    for key in (("spreader", TASK), ("reader", TASK)):
        old, new = load_results(original).data[key], load_results(fresh).data[key]
        assert old.blind_p is not None and new.blind_p is not None
        assert np.array_equal(old.blind_p, new.blind_p)

    write_report(fresh, out=tmp_path / "report", n_boot=200)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    reader = summary["counts"][TASK]["reader"]
    assert reader["blind_p"] == pytest.approx([1 / 3] * 4)
    assert reader["blind_pass_at_k"]["2"] == pytest.approx(5 / 9)
    assert reader["guessing"]["2"]["delta"]["value"] == pytest.approx(1 - 5 / 9)
    assert reader["guessing"]["1"]["delta"]["value"] == pytest.approx(1 - 1 / 3)
    assert "question-blind guessing floor" in (tmp_path / "report" / "summary.md").read_text()
    (boundary,) = summary["boundary"]  # spreader (base) -> reader (final): read, not guessed
    assert boundary["final"] == "reader" and boundary["guessing_only"] is False
    assert boundary["pass1_guessing_only"] is False


def test_no_guessing_floor_where_answers_are_not_numbers(tmp_path: Path) -> None:
    d = write_synthetic(
        tmp_path,
        {("m", TASK): np.zeros((2, 2))},
        {TASK: "logic"},
        texts={("m", TASK): [["a", "b"], ["1", "2"]]},
        answers={TASK: ["yes", "2"]},
    )
    tr = load_results(d).data[("m", TASK)]
    assert tr.blind_p is None and tr.blind_pass_at(2) is None
    assert above_guessing(tr, 2, 1.0) is None


def _change(delta_lo: float) -> PairedChange:
    i = Interval(0.5, 0.4, 0.6)
    return PairedChange(i, i, Interval(delta_lo + 0.1, delta_lo, delta_lo + 0.2))


def test_a_boundary_rise_under_the_guessing_floor_is_labelled_guessing() -> None:
    rose = Reading(_change(0.0), _change(0.1), [], [], 0)  # lenient pass@k_max rose: lo > 0
    flat = Reading(_change(0.0), _change(-0.1), [], [], 0)
    tb = TaskBoundary(TASK, "arithmetic", "base", "final", 64, 128, rose, rose)
    at_floor = {("final", TASK): {128: _change(-0.05)}}  # margin interval reaches below 0
    above = {("final", TASK): {128: _change(0.02)}}
    assert guessing_only(tb, at_floor) and not guessing_only(tb, above)
    assert not guessing_only(tb, {})  # no floor (answers not numbers): no label
    assert not guessing_only(replace(tb, lenient=flat), at_floor)  # nothing rose
    assert not guessing_only(replace(tb, lenient=None), at_floor)


def test_a_pass1_rise_at_the_k1_floor_is_labelled_pass1_guessing() -> None:
    rose = Reading(_change(0.1), _change(0.0), [], [], 0)  # lenient pass@1 rose: lo > 0
    tb = TaskBoundary(TASK, "arithmetic", "base", "final", 64, 128, rose, rose)
    assert pass1_guessing_only(tb, {("final", TASK): {1: _change(-0.05)}})
    assert not pass1_guessing_only(tb, {("final", TASK): {1: _change(0.02)}})
    assert not pass1_guessing_only(tb, {("final", TASK): {128: _change(-0.05)}})  # no k = 1
    flat = Reading(_change(-0.1), _change(0.0), [], [], 0)
    assert not pass1_guessing_only(
        replace(tb, lenient=flat), {("final", TASK): {1: _change(-0.05)}}
    )


def test_a_constant_answer_scores_pass1_at_its_floor(tmp_path: Path) -> None:
    """8 problems, 6 with answer 1: a model that answers 1 whatever the question has
    pass@1 = 6/8 = its floor at k = 1 (every other problem's samples say 1), so its rise
    over a model that always writes 3 is labelled 'pass@1 guessing'."""
    answers = ["1"] * 6 + ["2"] * 2
    texts = {("wrong", TASK): [["3", "3"]] * 8, ("constant", TASK): [["1", "1"]] * 8}
    rewards = {key: np.zeros((8, 2)) for key in texts}
    d = write_synthetic(
        tmp_path / "eval",
        rewards,
        {TASK: "arithmetic"},
        ks=[1, 2],
        texts=texts,
        answers={TASK: answers},
    )
    constant = load_results(d).data[("constant", TASK)]
    assert constant.blind_p is not None and constant.blind_p.tolist() == [1.0] * 6 + [0.0] * 2
    write_report(d, out=tmp_path / "report", n_boot=200)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    g1 = summary["counts"][TASK]["constant"]["guessing"]["1"]
    assert g1["final"]["value"] == pytest.approx(0.75) and g1["base"]["value"] == 0.75
    assert g1["delta"]["value"] == pytest.approx(0.0)
    (boundary,) = summary["boundary"]
    assert boundary["lenient"]["pass1"]["delta"]["lo"] > 0  # the rise itself is significant
    assert boundary["pass1_guessing_only"] is True
    assert "pass@1 guessing" in (tmp_path / "report" / "summary.md").read_text()


def test_best_constant_answer_hand_computed() -> None:
    assert best_constant([F(1), F(2), F(1), F(3)]) == (F(1), 0.5)
    assert best_constant([F(7, 2), F(2), F(7, 2), F(2)]) == (F(2), 0.5)  # tie: the smallest
    assert best_constant([]) is None


def test_the_report_names_a_tasks_best_constant_answer(tmp_path: Path) -> None:
    d = _spreader_and_reader(tmp_path / "eval")  # answers 1, 2, 1, 2
    write_report(d, out=tmp_path / "report", n_boot=200)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["tasks"][0]["constant"] == {"answer": "1", "rate": 0.5}
    answers = ["1"] * 6 + ["2"] * 2
    d = write_synthetic(
        tmp_path / "eval2",
        {("m", TASK): np.zeros((8, 1))},
        {TASK: "arithmetic"},
        ks=[1],
        texts={("m", TASK): [["1"]] * 8},
        answers={TASK: answers},
    )
    assert load_results(d).constant(TASK) == ("1", 0.75)
