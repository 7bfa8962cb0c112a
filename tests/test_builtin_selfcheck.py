"""Every built-in task passes its own self-check: the reference answer (in the task's format)
scores 1, and the empty, format-only, junk and echoed-prompt responses score exactly 0."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from prorl.tasks import Task, get_task
from prorl.tasks.selfcheck import JUNK, TRIVIAL, check_task, trivial_responses
from prorl.types import Example

# File rows of each answer format, with multi-answer references (several roots, pairs) and a
# question that itself mentions a box.
FILE_ROWS = [
    {"question": "What is 2+3?", "answer": "5", "data_source": "openai/gsm8k"},
    {"problem": "Solve x^2 - x - 6 = 0. Give all roots.", "answer": "3, -2", "data_source": "math"},
    {
        "problem": "Find all pairs (a, b) of positive integers with a + b = 3.",
        "answer": "(1,2),(2,1)",
        "data_source": "math",
    },
    {
        "problem": "Simplify 2/4. Put the result in \\boxed{}.",
        "answer": "\\frac{1}{2}",
        "data_source": "math",
    },
    {
        "question": "Which gas is inert? A) O2 B) Ar C) H2 D) Cl2",
        "answer": "B",
        "data_source": "Idavidrein/gpqa",
    },
    {
        "question": "Free-fall acceleration near Earth, in m/s^2?",
        "answer": "9.8",
        "data_source": "scp-116k",
    },
    {"question": "Write add(a, b).", "test_list": ["assert add(1, 2) == 3"], "data_source": "mbpp"},
]


def _file_task(tmp_path: Path, rows: list[dict] = FILE_ROWS, **settings: object) -> Task:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return get_task("file", path=str(path), val_fraction=0.0, **settings)


# (id, factory): the built-in tasks, each level of math-gen on its own.
TASKS: list[tuple[str, Callable[[Path], Task]]] = [
    *[(f"math-gen-{lv}", lambda _, lv=lv: get_task("math-gen", level=lv)) for lv in range(1, 6)],
    ("stem-gen", lambda _: get_task("stem-gen")),
    ("code-basic", lambda _: get_task("code-basic")),
    ("file", _file_task),
]
IDS = [name for name, _ in TASKS]
BUILTIN = [(name, make) for name, make in TASKS if name != "file"]


@pytest.mark.parametrize("make", [make for _, make in TASKS], ids=IDS)
def test_check_task_passes(make: Callable[[Path], Task], tmp_path: Path) -> None:
    task = make(tmp_path)
    result = check_task(task, problems=20)
    assert result.ok, "\n".join(f.line() for f in result.failures) or result.error
    assert not result.skipped
    # Every problem of a built-in task has a single reference (file: all but the code row).
    want_refs = result.problems - 1 if task.name == "file" else result.problems
    assert result.references == want_refs > 0


@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize(
    "name, settings",
    [("math-gen", {"level": [1, 2, 3, 4, 5]}), ("stem-gen", {}), ("code-basic", {})],
)
def test_check_task_passes_on_held_out_splits(name: str, settings: dict, split: str) -> None:
    result = check_task(get_task(name, **settings), problems=8, split=split)
    assert result.ok, "\n".join(f.line() for f in result.failures)


def _examples(task: Task, count: int = 6) -> list[Example]:
    size = task.size("train")
    return [task.example(i) for i in range(count if size is None else min(count, size))]


# case -> the expected ``formatted`` of a trivial response's score (junk: task-dependent).
FORMATTED = {
    "empty": False,  # no answer at all
    "format": False,  # the format around nothing is no answer either
    "echo": False,  # no prompt holds an answer in its own format
}


@pytest.mark.parametrize("case", TRIVIAL)
@pytest.mark.parametrize("make", [m for _, m in BUILTIN], ids=[n for n, _ in BUILTIN])
def test_trivial_responses_score_zero(
    make: Callable[[Path], Task], case: str, tmp_path: Path
) -> None:
    task = make(tmp_path)
    for ex in _examples(task):
        response = trivial_responses(task, ex)[case]
        score = task.score(response, ex)
        assert score.reward == 0.0, (case, response, score)
        if case in FORMATTED:
            assert score.formatted is FORMATTED[case], (case, response, score)


@pytest.mark.parametrize("make", [m for _, m in BUILTIN], ids=[n for n, _ in BUILTIN])
def test_reference_scores_one(make: Callable[[Path], Task], tmp_path: Path) -> None:
    task = make(tmp_path)
    for ex in _examples(task):
        reference = task.reference_response(ex)
        answer = ex.meta["reference"] if task.name == "code-basic" else ex.answer
        assert reference == task.format_answer(answer)
        score = task.score(reference, ex)
        assert (score.reward, score.formatted) == (1.0, True), (reference, score)


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("math-gen", "\\boxed{%s}"),
        ("stem-gen", "\\boxed{%s}"),
        ("code-basic", "```python\n%s\n```"),
    ],
)
def test_trivial_responses_are_what_they_say(name: str, fmt: str) -> None:
    task = get_task(name)
    ex = task.example(0)
    cases = trivial_responses(task, ex)
    assert cases == {
        "empty": "",
        "format": fmt % "",
        "junk": fmt % JUNK,
        "echo": ex.question,
    }


def test_instructions_hold_no_example_answer() -> None:
    """An example answer inside the instruction's own format is what an echo would score."""
    math, stem, code = get_task("math-gen"), get_task("stem-gen"), get_task("code-basic")
    assert math.score(math.example(0).question, math.example(0)).reason == "format"
    assert stem.score(stem.example(0).question, stem.example(0)).reason == "format"
    for i in range(code.size() or 0):
        assert code.example(i).question.count("```") == 1  # the hint names the fence, no block


def test_file_task_with_an_answer_in_its_prompt_fails_the_echo_check(tmp_path: Path) -> None:
    rows = [
        {"question": "What is 2+3? Answer like \\boxed{5}.", "answer": "5", "data_source": "math"}
    ]
    result = check_task(_file_task(tmp_path, rows), problems=5)
    assert not result.ok
    assert [f.case for f in result.failures] == ["echo"]


def test_toy_task_is_skipped_with_identity_format() -> None:
    task = get_task("toy-even")
    assert task.format_answer("abc") == "abc"
    assert task.reference_response(task.example(0)) is None
    assert check_task(task).skipped
