"""Honest rewards for reasoning-gym tasks: the score is correctness (1 or 0), never format
credit or reasoning-gym's partial credit, and trivial responses (empty, empty tags, junk,
the prompt echoed back) score 0 on real datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from prorl.tasks import get_task
from prorl.tasks.reasoning_gym import (
    _FINITE_TRAIN_SIZE,
    _PARSE_ERRORS_ARE_WRONG,
    _STRICT,
    OOD_TASKS,
    UNSOUND,
    ReasoningGymTask,
    extract_answer,
)
from prorl.tasks.selfcheck import JUNK, check_task

# The OOD trio, the datasets that needed fixes, and everyday ones (two with the default
# substring-credit scorer: basic_arithmetic, leg_counting).
SAMPLE = (
    *OOD_TASKS,
    "basic_arithmetic",
    "leg_counting",
    "chain_sum",
    "list_functions",
    "letter_counting",
)


@pytest.fixture(scope="module")
def tasks() -> dict[str, ReasoningGymTask]:
    return {name: ReasoningGymTask(name) for name in SAMPLE}


@pytest.mark.parametrize("name", SAMPLE)
@pytest.mark.parametrize(
    ("case", "formatted"),
    [
        ("empty", False),
        ("no tags", False),
        ("empty tags", False),  # an empty answer is no answer: no format credit either
        ("junk", True),
        ("echo", False),  # the instruction's example tag, empty, is the last one
    ],
)
def test_trivial_responses_score_zero(
    tasks: dict[str, ReasoningGymTask], name: str, case: str, formatted: bool
) -> None:
    task = tasks[name]
    for ex in (task.example(0), task.example(1), task.example(0, "val")):
        response = {
            "empty": "",
            "no tags": ex.answer,
            "empty tags": "<answer></answer>",
            "junk": f"<answer>{JUNK}</answer>",
            "echo": ex.question,
        }[case]
        score = task.score(response, ex)
        assert (score.reward, score.formatted) == (0.0, formatted), (name, case, score)
        assert score.reason == ("wrong" if formatted else "format")


@pytest.mark.parametrize("name", SAMPLE)
def test_reference_in_tags_scores_one(tasks: dict[str, ReasoningGymTask], name: str) -> None:
    task = tasks[name]
    for ex in (task.example(0), task.example(2), task.example(1, "val")):
        ref = task.reference_response(ex)
        if ref is None:  # boxnet: plans are checked by simulation, no single answer
            assert ex.meta["entry"]["answer"] is None
            continue
        assert ref == f"<answer>{ex.meta['entry']['answer']}</answer>"
        score = task.score(f"Let me think.</think>{ref}", ex)
        assert (score.reward, score.reason, score.formatted) == (1.0, "ok", True)


@pytest.mark.parametrize(
    ("name", "wrap"),
    [
        ("basic_arithmetic", "{}0"),  # 772649 -> 7726490: upstream gives 6/7
        ("leg_counting", "{} legs"),
        ("leg_counting", "the answer is {}"),
        ("basic_arithmetic", "{} {}"),
    ],
)
def test_substring_credit_is_not_correct(
    tasks: dict[str, ReasoningGymTask], name: str, wrap: str
) -> None:
    task = tasks[name]
    ex = task.example(0)
    answer = ex.meta["entry"]["answer"]
    content = wrap.format(answer, answer)
    upstream = task._dataset("train").score_answer(content, ex.meta["entry"])
    assert 0.0 < upstream < 1.0  # reasoning-gym's partial credit ...
    score = task.score(f"<answer>{content}</answer>", ex)
    assert (score.reward, score.reason) == (0.0, "wrong")  # ... is not correctness
    assert score.details["partial_credit"] == pytest.approx(upstream)


def test_boxnet_partial_plan_is_not_correct(tasks: dict[str, ReasoningGymTask]) -> None:
    task = tasks["boxnet"]
    ex = task.example(0)
    # An empty plan lifts no box: upstream still gives 0.05.
    assert task._dataset("train").score_answer("[]", ex.meta["entry"]) == 0.05
    assert task.score("<answer>[]</answer>", ex).reward == 0.0


def test_format_reward_setting_moved_to_shaping() -> None:
    with pytest.raises(ValueError, match=r"shaping\.format_reward \(training-only\)"):
        get_task("rg/leg_counting", format_reward=0.1)


def test_instruction_example_is_no_answer(tasks: dict[str, ReasoningGymTask]) -> None:
    ex = tasks["basic_arithmetic"].example(0)
    assert extract_answer(ex.question) == ""
    assert tasks["basic_arithmetic"].score(ex.question, ex).formatted is False


@pytest.mark.parametrize("name", sorted(UNSOUND))
def test_unsound_dataset_refuses_to_build(name: str) -> None:
    with pytest.raises(ValueError, match=f"rg/{name}: reasoning-gym's scorer cannot be trusted"):
        get_task(f"rg/{name}")
    assert name not in OOD_TASKS


def test_allow_unsound_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(UNSOUND, "leg_counting", "a test reason")
    with pytest.raises(ValueError, match=r"\(a test reason\); pass allow_unsound=True"):
        get_task("rg/leg_counting")
    task = get_task("rg/leg_counting", allow_unsound=True)
    assert task.example(0).question


# The datasets the sweep (docs/verifiers.md) found failing and that were fixed here; maze's
# test item 26 does not build upstream.
FIXED = sorted({*_STRICT, *_PARSE_ERRORS_ARE_WRONG, *_FINITE_TRAIN_SIZE, "maze"})


@pytest.mark.parametrize("name", FIXED)
def test_fixed_datasets_pass_the_self_check(name: str) -> None:
    result = check_task(get_task(f"rg/{name}"), problems=5)
    assert result.ok, result.verdict()
    assert result.references == 5


def test_game_of_life_halting_upstream_scorer_is_broken() -> None:
    """Why it is in _STRICT: upstream gives any non-empty text full credit."""
    task = ReasoningGymTask("game_of_life_halting")
    ex = task.example(0)
    entry = ex.meta["entry"]
    assert task._dataset("train").score_answer(JUNK, entry) == 1.0
    wrong = "False" if entry["answer"] == "True" else "True"
    assert task.score(f"<answer>{wrong}</answer>", ex).reward == 0.0
    assert task.score(f"<answer> {entry['answer'].lower()} </answer>", ex).reward == 1.0


@pytest.mark.parametrize("name", OOD_TASKS)
def test_ood_tasks_build_train_and_held_out_examples(name: str) -> None:
    task = get_task(f"rg/{name}")
    train, val, test = task.example(0), task.example(0, "val"), task.example(99, "test")
    assert train.question and val.question and test.question


@pytest.mark.parametrize("name", sorted(_FINITE_TRAIN_SIZE))
def test_finite_datasets_cycle_a_finite_training_set(name: str) -> None:
    task = ReasoningGymTask(name, val_size=20, test_size=20)
    size = _FINITE_TRAIN_SIZE[name]
    assert len(task._dataset("train")) == size
    held_out = {task.example(i, s).meta["question"] for s in ("val", "test") for i in range(20)}
    for i in range(5):
        first, again = task.example(i), task.example(i + 3 * size)
        # index modulo size (by source index: one list_functions generator uses the global
        # RNG upstream, so its questions are not reproducible)
        source = first.meta["entry"]["metadata"]["source_index"]
        assert source == again.meta["entry"]["metadata"]["source_index"] < size
        assert first.meta["question"] not in held_out


def test_held_out_items_are_skipped_in_a_cycled_training_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # leg_counting with one animal and few legs has a tiny problem space; cycling through
    # 50 items must still skip every item that is also in val/test.
    monkeypatch.setitem(_FINITE_TRAIN_SIZE, "leg_counting", 50)
    settings = {"min_animals": 1, "max_animals": 1, "max_instances": 2}
    task = ReasoningGymTask("leg_counting", val_size=10, test_size=10, **settings)
    held_out = {task.example(i, s).meta["question"] for s in ("val", "test") for i in range(10)}
    train = [task.example(i).meta["question"] for i in range(100)]
    assert held_out and not held_out & set(train)
    assert train[:50] == train[50:]


def test_file_rows_follow_the_task_rules(tmp_path: Path) -> None:
    import json

    import reasoning_gym

    rows = []
    for name in ("game_of_life_halting", "basic_arithmetic", "composite"):
        if name == "composite":  # an UNSOUND dataset's rows are never scored
            entry = {"question": "q", "answer": "1", "metadata": {"source_dataset": name}}
        else:
            entry = reasoning_gym.create_dataset(name, seed=3, size=1)[0]
        rows.append(
            {
                "question": entry["question"],
                "answer": entry["answer"],
                "data_source": "reasoning_gym",
                "extra_info": {"metadata": entry["metadata"]},
            }
        )
    path = tmp_path / "rg.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("file", path=str(path), val_fraction=0.0)
    halting, arithmetic, unsound = (task.example(i) for i in range(3))
    assert task.score(f"<answer>{halting.answer}</answer>", halting).reward == 1.0
    junk = task.score(f"<answer>{JUNK}</answer>", halting)
    assert (junk.reward, junk.reason, junk.formatted) == (0.0, "wrong", True)
    assert task.score(f"<answer>{arithmetic.answer}0</answer>", arithmetic).reward == 0.0
    assert task.score(f"<answer>{arithmetic.answer}</answer>", arithmetic).reward == 1.0
    no_tags = task.score(arithmetic.answer, arithmetic)
    assert (no_tags.reason, no_tags.formatted) == ("format", False)
    assert task.score(f"<answer>{unsound.answer}</answer>", unsound).is_infra_error


def test_unparsable_answer_is_wrong_not_infra_error() -> None:
    task = ReasoningGymTask("prime_factorization")
    ex = task.example(0)
    score = task.score(f"<answer>{JUNK}</answer>", ex)
    assert (score.reward, score.reason) == (0.0, "wrong")
    assert "parse_error" in score.details


def test_held_out_item_the_generator_cannot_build_is_replaced() -> None:
    task = ReasoningGymTask("maze")
    assert task.example(26, "test").question  # upstream raises on this item
    assert task.example(0).question  # and training builds past it


ARITH = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2, allow_negation=False)


def test_last_number_answers() -> None:
    task = get_task("rg/chain_sum", answer="last_number", **ARITH)
    ex = task.example(3, "val")
    a = ex.answer
    cases = {
        f"So the total is {a}.": (1.0, "ok"),
        f"{a} plus nothing: 1000": (0.0, "wrong"),  # the last number decides
        "I do not know.": (0.0, "format"),
        ex.question: (0.0, "format"),  # an echo's numbers are the question's
        f"{ex.question}\nThe answer is {a}": (1.0, "ok"),  # restating first is fine
        f"<answer>{a}</answer>": (1.0, "ok"),
    }
    for response, expected in cases.items():
        score = task.score(response, ex)
        assert (score.reward, score.reason) == expected, (response, score)
        # this reading's format is a number of the response's own: the format rate says
        # how often the model gave one at all
        assert score.formatted is (expected[1] != "format")
    assert task.format_answer("12") == "12" and task.reference_response(ex) == a
    assert check_task(task, problems=50).ok


def test_last_number_needs_numeric_answers() -> None:
    with pytest.raises(ValueError, match="answer=last_number needs numeric answers"):
        get_task("rg/word_sorting", answer="last_number")
    with pytest.raises(ValueError, match="answer must be one of tags, last_number"):
        get_task("rg/chain_sum", answer="boxed")
