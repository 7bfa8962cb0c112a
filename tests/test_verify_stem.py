"""STEM verifiers on (reference, response, expected) rows shaped like real model outputs."""

from __future__ import annotations

import re

import pytest

from prorl.tasks import get_task
from prorl.tasks.stem_gen import StemGenTask, fmt
from prorl.types import Example
from prorl.verify import get_verifier
from prorl.verify.stem import extract_choice, score_mc, score_short_answer

MC_TABLE = [
    ("C", "Answer: C", 1.0),
    ("C", "Comparing the options, the answer is (C).", 1.0),
    ("C", "Therefore the final answer is $\\boxed{C}$", 1.0),
    ("C", "$\\boxed{\\text{C}}$", 1.0),
    ("E", "\\boxed{(E)}", 1.0),
    ("C", "(A) is wrong, (B) is wrong, so (C)", 1.0),
    ("B", "Answer: A\nWait, let me recheck the units.\nAnswer: B", 1.0),
    ("C", "**Answer:** (C)", 1.0),
    ("C", "The correct option is: C.", 1.0),
    ("B", "The answer is $B$", 1.0),
    ("A", "answer: a", 1.0),
    ("D", "D", 1.0),
    ("D", "**D**", 1.0),
    ("J", "Answer: J", 1.0),
    ("A", "<think>It could be B.</think>\nAnswer: A", 1.0),
    # near misses and format failures
    ("B", "Answer: B\nActually, the answer is D", 0.0),  # last one wins
    ("C", "<think>answer: C</think>\nAnswer: A", 0.0),  # thinking ignored
    ("A", "the answer is a number", 0.0),  # an article, not a choice
    ("A", "Answer: Always convert to SI first.", 0.0),
    ("D", "I think it's D", 0.0),  # no recognised form
    ("K", "Answer: K", 0.0),  # outside A-J
    ("C", "\\boxed{3}", 0.0),
    ("B", "The velocity is 20 m/s.", 0.0),
]

SHORT_TABLE = [
    ("9.8", "Answer: 9.8 m/s^2", 1.0),
    ("9.8", "So $g = \\boxed{9.8\\,\\text{m/s}^2}$", 1.0),
    ("3e8", "\\boxed{3\\times 10^{8}\\text{ m/s}}", 1.0),
    ("25", "Answer: 25 °C", 1.0),
    ("25", "Answer: 25°C", 1.0),
    ("0.5", "Answer: $\\frac{1}{2}$", 1.0),
    ("1200", "The work done is W = Fd, so the answer is 1,200 J.", 1.0),
    ("2", "\\boxed{\\frac{4}{2}}", 1.0),
    ("18", "The molar mass of water is 18 g/mol.\nAnswer: 18 g/mol", 1.0),
    ("\\frac{1}{2}mv^2", "\\boxed{\\frac{mv^2}{2}}", 1.0),
    ("6.02e23", "Answer: 6.02 \\times 10^{23}", 1.0),
    ("0.25", "\\boxed{25\\%}", 1.0),
    ("100", "answer is 100 kPa", 1.0),
    # near misses and format failures
    ("5", "Answer: 5x", 0.0),  # a variable, not a unit
    ("5", "Answer: 5 + x", 0.0),
    ("-4", "Answer: 4", 0.0),  # wrong sign
    ("12", "no final answer given", 0.0),
    ("9.81", "Answer: 9.8 m/s^2", 0.0),  # exact by default
    ("300", "\\boxed{3000 \\text{ J}}", 0.0),  # off by a factor of 10
    ("2", "\\boxed{2} ... on second thought \\boxed{3}", 0.0),
    ("7", "The answer is seven", 0.0),
]


@pytest.mark.parametrize(("reference", "response", "expected"), MC_TABLE)
def test_mc_table(reference: str, response: str, expected: float) -> None:
    assert score_mc(response, reference).reward == expected


@pytest.mark.parametrize(("reference", "response", "expected"), SHORT_TABLE)
def test_short_answer_table(reference: str, response: str, expected: float) -> None:
    assert score_short_answer(response, reference).reward == expected


def test_tables_are_big_enough() -> None:
    assert len(MC_TABLE) >= 20 and len(SHORT_TABLE) >= 20


def test_mc_reasons_and_extraction() -> None:
    assert score_mc("I am not sure", "A").reason == "format"
    assert score_mc("Answer: B", "A").reason == "wrong"
    assert extract_choice("(A) no. (B) no. The answer is (D). See (C)?") == "C"


@pytest.mark.parametrize(
    ("response", "reason", "formatted"),
    [
        ("I am not sure", "format", False),
        ("", "format", False),
        ("\\boxed{}", "format", False),
        ("\\boxed{xyzzy plover}", "format", False),
        ("\\boxed{letter}", "format", False),  # the instruction's placeholder, copied
        ("Answer: B", "wrong", True),
        ("\\boxed{A}", "ok", True),
    ],
)
def test_mc_formatted(response: str, reason: str, formatted: bool) -> None:
    score = score_mc(response, "A")
    assert (score.reason, score.formatted) == (reason, formatted)


@pytest.mark.parametrize(
    ("reference", "response", "reason", "formatted"),
    [
        ("9.8", "no answer", "format", False),
        ("9.8", "\\boxed{}", "format", False),
        ("9.8", "\\boxed{xyzzy plover}", "wrong", True),
        ("9.8", "Answer: 9.8 m/s^2", "ok", True),
        ("9.8", "\\boxed{9.8}", "ok", True),
        # several boxes: the final run, as in the math verifier
        ("2, -2", "$v = \\boxed{2}$ or $v = \\boxed{-2}$", "ok", True),
        ("2", "\\boxed{2} or \\boxed{3}", "wrong", True),
        ("3", "\\boxed{2}, wait, no: \\boxed{3}", "ok", True),
    ],
)
def test_short_answer_formatted(
    reference: str, response: str, reason: str, formatted: bool
) -> None:
    score = score_short_answer(response, reference)
    assert (score.reason, score.formatted) == (reason, formatted)
    assert score.reward == (1.0 if reason == "ok" else 0.0)


def test_registered_verifiers_and_rel_tol() -> None:
    mc, short = get_verifier("stem_mc"), get_verifier("stem")
    assert mc("Answer: (B)", Example("u", "stem-gen", (), "B")).reward == 1.0
    measured = Example("u", "t", (), "9.81", meta={"rel_tol": 0.01})
    assert short("Answer: 9.8 m/s^2", measured).reward == 1.0
    assert short("Answer: 9.6 m/s^2", measured).reward == 0.0
    assert short("Answer: 9.8", Example("u", "t", (), "9.81")).reward == 0.0


# ----------------------------------------------------------------------------- stem-gen


def _recompute(question: str) -> float | None:
    """The correct value from the question text alone, for the families covered here."""
    nums = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", question.split("\n")[0])]
    if "net force" in question:
        return nums[0] * nums[1]
    if "kinetic energy" in question:
        return nums[0] * nums[1] ** 2 / 2
    if "km in" in question:
        return nums[0] / nums[1]
    if "degrees Celsius" in question:
        return nums[0] + 273.15
    if m := re.match(r"How many (\w+) are in (\d+) (\w+)\?", question):
        factor = {("kilometres", "metres"): 1000, ("metres", "centimetres"): 100}
        factor |= {("hours", "minutes"): 60, ("minutes", "seconds"): 60}
        factor |= {("kilograms", "grams"): 1000, ("litres", "millilitres"): 1000}
        return int(m[2]) * factor[(m[3], m[1])]
    return None


def test_stem_gen_correct_letter_checks_out() -> None:
    task = get_task("stem-gen")
    covered = 0
    for i in range(300):
        ex = task.example(i)
        options = ex.meta["options"]
        assert len(set(options)) == 4
        assert f"{ex.answer}) {options['ABCD'.index(ex.answer)]} " in ex.question
        value = _recompute(ex.question)
        if value is not None:
            covered += 1
            assert options["ABCD".index(ex.answer)] == fmt(value), ex.question
            assert fmt(value) not in options[: "ABCD".index(ex.answer)]
        assert task.score(f"The answer is \\boxed{{{ex.answer}}}", ex).reward == 1.0
        assert task.score(task.reference_response(ex), ex).reward == 1.0
        assert task.score(ex.question, ex).reward == 0.0  # the prompt copied back
    assert covered > 100
    letters = {task.example(i).answer for i in range(100)}
    assert letters == set("ABCD")  # the correct position varies


def test_stem_gen_instruction_and_answer_format() -> None:
    task = get_task("stem-gen")
    ex = task.example(0)
    assert "\\boxed{}" in ex.question and "\\boxed{letter}" in ex.question
    assert not re.search(r"\\boxed\{[A-J]\}", ex.question)  # no option letter as the example
    assert extract_choice(ex.question) is None
    assert task.format_answer("C") == "\\boxed{C}"
    assert task.reference_response(ex) == f"\\boxed{{{ex.answer}}}"


def test_stem_gen_deterministic_and_disjoint() -> None:
    a, b = StemGenTask(seed=1), StemGenTask(seed=1)
    assert [a.example(i) for i in range(30)] == [b.example(i) for i in range(30)]
    val = {a.example(i, "val").meta["key"] for i in range(100)}
    test = {a.example(i, "test").meta["key"] for i in range(100)}
    train = {a.example(i).meta["key"] for i in range(1500)}
    assert not (train & val) and not (train & test) and not (val & test)
    with pytest.raises(IndexError):
        a.example(200, "test")


def test_fmt() -> None:
    assert [fmt(12.0), fmt(298.15), fmt(1 / 150), fmt(-0.5)] == [
        "12",
        "298.15",
        "0.0066667",
        "-0.5",
    ]
