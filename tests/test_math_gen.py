"""math-gen: deterministic, disjoint splits, and answers that check out independently."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from prorl.tasks import get_task, list_tasks
from prorl.tasks.math_gen import INSTRUCTION, MathGenTask, format_answer, split_of_key
from prorl.types import Example


def _solve_independently(question: str) -> Fraction | None:
    """Recompute the answer from the question text alone (None: family not covered here)."""
    nums = [int(n) for n in re.findall(r"-?\d+", question.split("\n")[0])]
    if m := re.match(r"Solve for x: (\d+)x ([+-]) (\d+) = (-?\d+)", question):
        a, sign, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        return Fraction(c - (b if sign == "+" else -b), a)
    if m := re.match(r"What is (\d+)/(\d+) \+ (\d+)/(\d+)\?", question):
        return Fraction(int(m[1]), int(m[2])) + Fraction(int(m[3]), int(m[4]))
    if m := re.match(r"What is (\d+) \+ (\d+)\?", question):
        return Fraction(int(m[1]) + int(m[2]))
    if m := re.match(r"Compute (\d+) \+ (\d+) \* (\d+) - (\d+)\.", question):
        return Fraction(int(m[1]) + int(m[2]) * int(m[3]) - int(m[4]))
    if "gets" in question and "more" in question:
        return Fraction(nums[0] + nums[1])
    if "gave away" in question:
        return Fraction(nums[0] - nums[1])
    if "packs of" in question:
        return Fraction(nums[0] * nums[1])
    if "equally among" in question:
        return Fraction(nums[0], nums[1])
    if "then gives" in question:
        return Fraction(nums[0] + nums[1] - nums[2])
    if "% discount" in question:
        return Fraction(nums[1] * nums[0], 100)
    if "of what is left" in question:
        a, b, c, d = nums[:4]
        return (1 - Fraction(a, b)) * (1 - Fraction(c, d))
    return None


def test_answers_check_out_independently() -> None:
    task = get_task("math-gen", level=[1, 2, 3, 4, 5])
    covered = 0
    for i in range(400):
        ex = task.example(i)
        expected = _solve_independently(ex.question)
        if expected is not None:
            covered += 1
            assert Fraction(ex.answer) == expected, ex.question
    assert covered > 250


def test_level5_answers_satisfy_their_equations() -> None:
    task = get_task("math-gen", level=5)
    for i in range(200):
        ex = task.example(i)
        x = Fraction(ex.answer)
        if m := re.match(r"If x \+ y = (-?\d+) and (\d+)x - (\d+)y = (-?\d+)", ex.question):
            y = int(m[1]) - x
            assert int(m[2]) * x - int(m[3]) * y == int(m[4])
        elif m := re.match(r"The equation x\^2 ([+-]) (\d+)x ([+-]) (\d+) = 0", ex.question):
            b = int(m[2]) * (-1 if m[1] == "-" else 1)
            c = int(m[4]) * (1 if m[3] == "+" else -1)
            assert x * x + b * x + c == 0
            assert -b - x <= x  # the other root (sum of roots is -b) is not larger
        else:
            assert _solve_independently(ex.question) == x
            assert x.denominator > 1  # "rational_linear" exists to produce fractions


def test_hand_computed_examples() -> None:
    assert format_answer(Fraction(6, 4)) == "3/2"
    assert format_answer(Fraction(-8, 4)) == "-2"
    ex = Example("u", "math-gen", (), "3/2")
    task = MathGenTask()
    assert task.score("x = \\boxed{\\frac{3}{2}}", ex).reward == 1.0
    assert task.score("x = \\boxed{1.5}", ex).reward == 1.0
    assert task.score("x = \\boxed{2/3}", ex).reward == 0.0
    assert task.score("x = 3/2", ex).reason == "format"


def test_no_number_in_the_instruction_box() -> None:
    """The old instruction showed ``\\boxed{42}``: the prompt, copied back, then scored 1 on
    every problem whose answer is 42 ("What is 28 + 14?")."""
    assert not re.search(r"\\boxed\{[^}]*\d", INSTRUCTION)
    task = MathGenTask(level=[1, 2, 3])
    hits = [ex for ex in (task.example(i) for i in range(1500)) if ex.answer == "42"]
    assert hits  # the case that used to leak
    for ex in hits:
        assert task.score(ex.question, ex).reward == 0.0
        assert task.score(task.reference_response(ex), ex).reward == 1.0


def test_answer_format_and_reference() -> None:
    task = MathGenTask(level=4)
    assert task.format_answer("3/2") == "\\boxed{3/2}"
    for i in range(50):
        ex = task.example(i)
        assert task.reference_response(ex) == f"\\boxed{{{ex.answer}}}"
        assert task.score(task.reference_response(ex), ex).reward == 1.0


def test_deterministic_and_seeded() -> None:
    a, b = MathGenTask(seed=3, level=[1, 4]), MathGenTask(seed=3, level=[1, 4])
    assert [a.example(i) for i in range(20)] == [b.example(i) for i in range(20)]
    assert a.example(5, "val") == b.example(5, "val")
    other = MathGenTask(seed=4, level=[1, 4])
    assert [a.example(i).question for i in range(20)] != [
        other.example(i).question for i in range(20)
    ]
    assert a.example(7).uid == "math-gen:train:3:7"


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_splits_are_disjoint_by_problem(level: int) -> None:
    task = MathGenTask(level=level, val_size=100, test_size=100)
    keys = {s: {task.example(i, s).meta["key"] for i in range(100)} for s in ("val", "test")}
    train = {task.example(i).meta["key"] for i in range(1500)}
    assert not (train & keys["val"]) and not (train & keys["test"])
    assert not (keys["val"] & keys["test"])
    assert all(split_of_key(k) == "train" for k in train)


def test_prompt_asks_for_boxed_answer_and_level1_is_easy() -> None:
    task = get_task("math-gen")
    ex = task.example(0)
    assert "\\boxed{}" in ex.question and ex.prompt[0]["role"] == "user"
    assert ex.question.endswith("\nPut your final answer in \\boxed{}.")
    answers = [int(task.example(i).answer) for i in range(100)]  # level 1: small integers
    assert min(answers) > 0 and max(answers) <= 60


def test_bad_settings_and_indices() -> None:
    with pytest.raises(ValueError, match="level"):
        MathGenTask(level=7)
    with pytest.raises(ValueError, match="level"):
        get_task("math-gen", level=[])
    task = MathGenTask(val_size=10)
    assert (task.size("train"), task.size("val"), task.size("test")) == (None, 10, 200)
    with pytest.raises(IndexError):
        task.example(10, "val")
    with pytest.raises(ValueError, match="split"):
        task.example(0, "dev")


def test_registered_with_math_verifier() -> None:
    info = next(t for t in list_tasks() if t.name == "math-gen")
    assert (info.domain, info.verifier) == ("math", "math")
