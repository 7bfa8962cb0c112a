"""The math verifier on (reference, response, expected) rows shaped like real model outputs."""

from __future__ import annotations

import pytest

from prorl.types import Example
from prorl.verify import get_verifier
from prorl.verify.math import extract_answer, extract_boxed, is_equivalent, score_math

COT = "Let me work through this step by step.\nFirst, we compute the sum.\n"

# (reference, response, expected reward)
TABLE = [
    # equivalent forms
    ("1000", COT + "The total is \\boxed{1,000}.", 1.0),
    ("1000000", "\\boxed{1,000,000}", 1.0),
    ("1000", "So there are $\\boxed{1{,}000}$ beads.", 1.0),
    ("0.5", "Thus $x = \\boxed{\\frac12}$", 1.0),
    ("\\frac{3}{4}", "The probability is \\boxed{0.75}", 1.0),
    ("3/4", "Answer: $\\boxed{\\dfrac{3}{4}}$", 1.0),
    ("1/2", "$\\boxed{\\tfrac{1}{2}}$", 1.0),
    ("-\\frac{1}{2}", "\\boxed{-0.5}", 1.0),
    ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}", 1.0),
    ("x^2+2x+1", "Expanding, \\boxed{(x+1)^2}", 1.0),
    ("(1,2]", "The solution set is \\boxed{\\left(1, 2\\right]}", 1.0),
    ("\\{1,2,3\\}", "\\boxed{\\{3, 2, 1\\}}", 1.0),
    ("(3,-1)", "The intersection point is \\boxed{(3, -1)}.", 1.0),
    ("25\\%", "\\boxed{25\\%}", 1.0),
    ("25\\%", "\\boxed{0.25}", 1.0),
    ("90", "Each angle measures \\boxed{90^\\circ}", 1.0),
    ("12", "The side is \\boxed{12\\text{ cm}}.", 1.0),
    ("18.9", "She pays \\boxed{\\$18.90}", 1.0),
    ("10", "\\boxed{\\!10}", 1.0),
    ("10", "so the answer is \\boxed{10.}", 1.0),
    ("5", "\\boxed{x = 5}", 1.0),
    ("7", "\\boxed 7", 1.0),
    ("7", "\\fbox{7}", 1.0),
    ("4", "\\boxed{\\boxed{4}}", 1.0),
    ("5", "First guess \\boxed{3}. Checking again, the answer is \\boxed{5}", 1.0),
    ("7", "<think>maybe \\boxed{8}</think>The answer is \\boxed{7}", 1.0),
    # near misses
    ("-3", COT + "\\boxed{3}", 0.0),  # wrong sign
    ("12", "\\boxed{13}", 0.0),  # off by one
    ("5", "\\boxed{5} hmm, no: \\boxed{3}", 0.0),  # last boxed wins
    ("7", "<think>\\boxed{7}</think> so \\boxed{8}", 0.0),  # boxed inside thinking ignored
    ("\\frac{1}{3}", "\\boxed{0.333}", 0.0),  # rounded too early
    ("\\pi", "\\boxed{3.14}", 0.0),
    ("(1,2]", "\\boxed{[1,2]}", 0.0),  # wrong endpoint
    ("(3,-1)", "\\boxed{(-1, 3)}", 0.0),  # ordered pair swapped
    ("3", "\\boxed{}", 0.0),
    ("12", "The answer is 12", 0.0),  # unboxed
    ("6", "**Answer:** 6", 0.0),
    ("10", "\\boxed{10**10**10}", 0.0),
]


@pytest.mark.parametrize(("reference", "response", "expected"), TABLE)
def test_math_table(reference: str, response: str, expected: float) -> None:
    assert score_math(response, reference).reward == expected


def test_table_is_big_enough() -> None:
    assert len(TABLE) >= 20
    assert sum(r[2] == 0.0 for r in TABLE) >= 10


def test_reasons() -> None:
    assert score_math("The answer is 12", "12").reason == "format"
    wrong = score_math("\\boxed{13}", "12")
    assert (wrong.reason, wrong.details["extracted"]) == ("wrong", "13")
    assert score_math("\\boxed{12}", "12").reason == "ok"


@pytest.mark.parametrize(
    ("response", "reason", "formatted"),
    [
        ("The answer is 12", "format", False),
        ("", "format", False),
        ("\\boxed{}", "format", False),  # the format around nothing is no answer
        ("\\boxed{ }", "format", False),
        ("\\boxed{13}", "wrong", True),
        ("\\boxed{xyzzy plover}", "wrong", True),
        ("\\boxed{12}", "ok", True),
        ("<think>\\boxed{12}</think>no box after thinking", "format", False),
    ],
)
def test_formatted(response: str, reason: str, formatted: bool) -> None:
    score = score_math(response, "12")
    assert (score.reason, score.formatted) == (reason, formatted)
    assert score.reward == (1.0 if reason == "ok" else 0.0)


# Answers given as several boxes, as models write multi-answer solutions, and self-corrections.
# (reference, response, expected reward)
MULTI_BOX = [
    # quadratic roots: every root, in any order, any separator
    ("2, -3", "$x = \\boxed{2}$ and $x = \\boxed{-3}$", 1.0),
    ("2, -3", "The roots are $\\boxed{-3}$ and $\\boxed{2}$.", 1.0),
    ("-3, 2", "x = \\boxed{2} or x = \\boxed{-3}", 1.0),
    ("2, -3", "x_1 = \\boxed{2}, x_2 = \\boxed{-3}", 1.0),
    ("2, -3", "$$x = \\boxed{2}$$\n$$x = \\boxed{-3}$$", 1.0),
    ("2, -3", "\\boxed{2} \\text{ or } \\boxed{-3}", 1.0),
    ("2, -3", "\\[x = \\boxed{2} \\quad\\text{or}\\quad x = \\boxed{-3}\\]", 1.0),
    ("2, -3", "\\boxed{2, -3}", 1.0),  # one box holding the list
    ("\\pm 2", "\\boxed{2}, \\boxed{-2}", 1.0),
    # the reference written as "x = a or x = b" or as a set
    ("x = 2 \\text{ or } x = -3", "x = \\boxed{2} or x = \\boxed{-3}", 1.0),
    ("\\{2, -3\\}", "\\boxed{2}, \\boxed{-3}", 1.0),
    ("1, 2, 3", "\\boxed{1}, \\boxed{2}, and \\boxed{3}", 1.0),
    # ordered pairs: a list of solutions, order of the list free, order inside a pair not
    ("(2,1),(1,2)", "\\boxed{(2, 1)}, \\boxed{(1, 2)}", 1.0),
    ("(2,1),(1,2)", "\\boxed{(1, 2)} and \\boxed{(2, 1)}", 1.0),
    ("(3,-1)", "x = \\boxed{3}, y = \\boxed{-1}", 1.0),
    ("(3,-1)", "x = \\boxed{-1}, y = \\boxed{3}", 0.0),
    # incomplete or padded lists
    ("2, -3", "\\boxed{2}", 0.0),
    ("2, -3", "\\boxed{-3}", 0.0),
    ("2, -3", "\\boxed{2}, \\boxed{-3}, \\boxed{5}", 0.0),
    ("(2,1),(1,2)", "\\boxed{(2, 1)}", 0.0),
    # hedging: listing candidates is one (wrong) answer, not a free pick
    ("3", "\\boxed{1}, \\boxed{2}, \\boxed{3}", 0.0),
    ("3", "\\boxed{3} or \\boxed{4}", 0.0),
    ("3", "\\boxed 5 or \\boxed 3", 0.0),
    ("3", "\\boxed{3}, \\boxed{3}", 1.0),  # the same answer twice is one answer
    # self-corrections: any words between boxes start over at the last box
    ("3", "\\boxed{5} no: \\boxed{3}", 1.0),
    ("5", "\\boxed{5} no: \\boxed{3}", 0.0),
    ("3", "\\boxed{5}. Wait, that is wrong. \\boxed{3}", 1.0),
    ("3", "\\boxed{5}, no wait, \\boxed{3}", 1.0),
    ("5", "\\boxed{5}, no wait, \\boxed{3}", 0.0),
    ("2, -3", "\\boxed{2} and \\boxed{3}. Correction: \\boxed{2} and \\boxed{-3}", 1.0),
    ("3", "\\boxed{} \\boxed{3}", 1.0),  # an empty box adds nothing
]


@pytest.mark.parametrize(("reference", "response", "expected"), MULTI_BOX)
def test_multi_box_table(reference: str, response: str, expected: float) -> None:
    score = score_math(response, reference)
    assert score.reward == expected, (score, extract_answer(response))
    assert score.formatted is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{5} no: \\boxed{3}", "3"),
        ("$\\boxed{2}$ and $\\boxed{-3}$", "2, -3"),
        ("\\boxed{2}, \\boxed{2}", "2"),
        ("a \\boxed{1} b \\boxed{{2}+{3}} c", "{2}+{3}"),
        ("\\boxed{\\boxed{4}}, \\boxed{5}", "4, 5"),
        ("no box", None),
        ("\\boxed{}", ""),
        ("\\boxed{1}" + " " * 80 + "\\boxed{2}", "2"),  # too far apart to be one answer
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_many_boxes_stay_cheap_and_guarded() -> None:
    hedge = ", ".join(f"\\boxed{{{i}}}" for i in range(2000))
    assert score_math(hedge, "1999").reward == 0.0  # over the length guard: never parsed
    assert score_math(hedge + " so the answer is \\boxed{7}", "7").reward == 1.0


def test_registered_verifier_uses_example_answer() -> None:
    verifier = get_verifier("math")
    example = Example("u", "math-gen", ({"role": "user", "content": "1+1?"},), "2")
    assert verifier("so \\boxed{2}", example).reward == 1.0
    assert verifier("so \\boxed{3}", example).reward == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("a \\boxed{1} b \\boxed{{2}+{3}} c", "{2}+{3}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close the box
        ("\\boxed 5.", "5"),
        ("\\fbox{x}", "x"),
        ("\\boxed{unbalanced", None),
        ("no box", None),
        ("\\boxedx{3}", None),
        ("<think>\\boxed{1}</think>nothing", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_boxed_deep_nesting_is_linear() -> None:
    depth = 10_000
    text = "\\boxed{" + "{" * depth + "1" + "}" * depth + "}"
    assert extract_boxed(text) == "{" * depth + "1" + "}" * depth


def test_guards_reject_absurd_answers_without_parsing() -> None:
    # These would take sympy minutes; the guards answer at once (no pool needed here).
    assert not is_equivalent("(" * 10_000 + "1" + ")" * 10_000, "1")
    assert not is_equivalent("9" * 1_000_000, "9")
    assert score_math("\\boxed{" + "1+" * 500_000 + "1}", "1").reason == "wrong"
