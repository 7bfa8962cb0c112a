"""ifeval-gen: determinism, disjoint splits, rendering, compatibility, end-to-end scoring."""

from __future__ import annotations

import json
from typing import Any

import pytest

from prorl.tasks import get_task
from prorl.tasks.ifeval import (
    CONFLICTS,
    SAMPLERS,
    WORDS_PER_TOKEN,
    IFEvalGenTask,
    infeasible,
    words_needed,
)
from prorl.tasks.selfcheck import check_task
from prorl.verify import get_verifier
from prorl.verify.ifeval import INSTRUCTION_IDS, score_ifeval, validate_spec
from prorl.verify.ifeval_text import count_words


def _content(example: Any) -> str:
    return json.dumps([example.meta["topic"], example.answer], sort_keys=True)


def test_registered_and_covers_every_instruction_kind() -> None:
    task = get_task("ifeval-gen", seed=3)
    assert isinstance(task, IFEvalGenTask) and task.domain == "instruction_following"
    assert set(SAMPLERS) == set(INSTRUCTION_IDS)
    seen = {i for n in range(400) for i in task.example(n).meta["instruction_id_list"]}
    assert seen == set(INSTRUCTION_IDS)


def test_deterministic_from_seed_index_split() -> None:
    a, b = IFEvalGenTask(seed=7), IFEvalGenTask(seed=7)
    for split in ("train", "val", "test"):
        for i in range(20):
            assert a.example(i, split) == b.example(i, split)
    other = IFEvalGenTask(seed=8)
    same = sum(a.example(i).question == other.example(i).question for i in range(50))
    assert same < 5


def test_splits_are_disjoint_by_content_across_seeds() -> None:
    train = {_content(IFEvalGenTask(seed=s).example(i)) for s in (0, 1) for i in range(1500)}
    task = IFEvalGenTask(seed=0)
    val = {_content(task.example(i, "val")) for i in range(200)}
    test = {_content(task.example(i, "test")) for i in range(200)}
    assert len(val) > 150 and len(test) > 150  # mostly distinct items, not one repeated
    assert not train & val and not train & test and not val & test


def test_sizes_and_bad_settings() -> None:
    task = IFEvalGenTask(val_size=5, test_size=0)
    assert (task.size("train"), task.size("val"), task.size("test")) == (None, 5, 0)
    with pytest.raises(IndexError):
        task.example(5, "val")
    with pytest.raises(ValueError, match="bogus:kind"):
        IFEvalGenTask(kinds=["punctuation:no_comma", "bogus:kind"])
    with pytest.raises(ValueError, match="min_constraints"):
        IFEvalGenTask(min_constraints=3, max_constraints=2)
    with pytest.raises(ValueError, match="split"):
        task.size("dev")


def test_constraint_counts_kinds_filter_and_no_conflicts() -> None:
    task = get_task("ifeval-gen", min_constraints=2, max_constraints=3)
    for i in range(300):
        ids = task.example(i).meta["instruction_id_list"]
        assert 2 <= len(ids) <= 3 and len(set(ids)) == len(ids)
        assert not any(frozenset((a, b)) in CONFLICTS for a in ids for b in ids if a != b)
    easy = "punctuation:no_comma, startend:end_checker"  # CLI form
    filtered = get_task("ifeval-gen", kinds=easy, max_constraints=2)
    for i in range(50):
        ids = filtered.example(i, "val").meta["instruction_id_list"]
        assert set(ids) <= {"punctuation:no_comma", "startend:end_checker"}


_LANGUAGE_NAMES = {
    "fr": "French",
    "es": "Spanish",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "sv": "Swedish",
    "pl": "Polish",
}


# Text each instruction's rendering must contain, given its kwargs.
def _expected_wording(iid: str, kw: dict[str, Any]) -> list[str]:
    rel = kw.get("relation") or kw.get("let_relation") or kw.get("capital_relation")
    words = [{"less than": "fewer than", "at least": "at least"}[rel]] if rel else []
    for key in (
        "num_sentences",
        "num_paragraphs",
        "num_words",
        "num_placeholders",
        "num_bullets",
        "num_highlights",
        "num_sections",
        "frequency",
        "let_frequency",
        "capital_frequency",
    ):
        if key in kw:  # counts of occurrences render 1 as "once"
            once = key in ("frequency", "let_frequency", "capital_frequency") and kw[key] == 1
            words.append("once" if once else str(kw[key]))
    for key in ("keyword", "first_word", "postscript_marker", "section_spliter", "end_phrase"):
        if key in kw:
            words.append(kw[key])
    words += kw.get("keywords", []) + kw.get("forbidden_words", [])
    fixed = {
        "keywords:letter_frequency": f"'{kw.get('letter')}'",
        "language:response_language": _LANGUAGE_NAMES.get(kw.get("language", "")),
        "length_constraints:number_paragraphs": "***",
        "detectable_format:constrained_response": "My answer is maybe.",
        "detectable_format:json_format": "JSON",
        "detectable_format:title": "<<",
        "combination:two_responses": "******",
        "combination:repeat_prompt": "repeat the request",
        "change_case:english_capital": "capital letters",
        "change_case:english_lowercase": "lowercase",
        "punctuation:no_comma": "commas",
        "startend:quotation": "double quotation marks",
    }
    return words + ([fixed[iid]] if fixed.get(iid) else [])


def test_rendering_states_every_constraint() -> None:
    task = IFEvalGenTask(seed=1)
    for i in range(300):
        ex = task.example(i)
        assert ex.question.startswith("Write ")
        for iid, kw in zip(ex.meta["instruction_id_list"], ex.meta["kwargs"], strict=True):
            for fragment in _expected_wording(iid, kw):
                assert fragment in ex.question, (iid, fragment, ex.question)


def test_answer_json_matches_meta_and_is_valid() -> None:
    task = IFEvalGenTask(seed=2)
    for i in range(100):
        ex = task.example(i, "test")
        spec = json.loads(ex.answer)
        assert spec["instruction_id_list"] == ex.meta["instruction_id_list"]
        assert spec["kwargs"] == ex.meta["kwargs"]
        validate_spec(spec["instruction_id_list"], spec["kwargs"], ex.question)
        repeat = "combination:repeat_prompt"
        if repeat in spec["instruction_id_list"]:
            kw = spec["kwargs"][spec["instruction_id_list"].index(repeat)]
            assert ex.question.startswith(kw["prompt_to_repeat"])


def _satisfying_response(ids: list[str], kwargs: list[dict[str, Any]]) -> str:
    body = "the forest was quiet and the air smelled of rain"
    end = next(
        (kw["end_phrase"] for i, kw in zip(ids, kwargs, strict=True) if "end_phrase" in kw), ""
    )
    return f"{body}. {end.lower()}".strip()


def test_generated_items_score_end_to_end() -> None:
    kinds = ["punctuation:no_comma", "startend:end_checker", "change_case:english_lowercase"]
    task = get_task("ifeval-gen", kinds=kinds, min_constraints=2, max_constraints=2)
    verify = get_verifier("ifeval")
    for i in range(30):
        ex = task.example(i)
        ids, kwargs = ex.meta["instruction_id_list"], ex.meta["kwargs"]
        good = _satisfying_response(ids, kwargs)
        assert task.score(f"<think>Hmm, ok.</think>{good}", ex).reward == 1.0, (ids, good)
        assert verify(good, ex).reward == 1.0
        # Adding a capitalised, comma-laden sentence after the end breaks every constraint.
        bad = task.score(good + " Also, Bye", ex)
        assert bad.reward == 0.0 and bad.reason == "wrong"


# --- honest rewards: feasible under the cap, failed by the empty response, content gate ----

DEFAULT_JOB_KINDS = (
    "change_case:english_lowercase,punctuation:no_comma,startend:end_checker,"
    "length_constraints:number_words"
)
CAPS = (None, 64, 256)
_FILLER = (
    "the quiet morning light spread across the old harbor while fishermen mended their nets. "
    "gulls circled above the calm gray water and children walked slowly toward the market. "
)


def _filler(n: int) -> str:
    stream = (_FILLER * (n // 20 + 1)).split()
    return " ".join(stream[:n]).rstrip(".") + "."


def _default_kinds_response(ids: list[str], kwargs: list[dict[str, Any]], budget: int) -> str:
    """A response meeting every constraint the default job's kinds can draw, in few words."""
    spec = dict(zip(ids, kwargs, strict=True))
    end = spec.get("startend:end_checker", {}).get("end_phrase", "")
    end_words = len(end.split())
    total = max(12, end_words + 8)
    words = spec.get("length_constraints:number_words")
    if words and words["relation"] == "at least":
        total = max(total, words["num_words"])
    elif words:
        total = words["num_words"] - 1
    total = min(total, budget)
    return f"{_filler(total - end_words)} {end}".strip()


@pytest.mark.parametrize("cap", CAPS)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_default_job_prompts_are_feasible_and_trivial_responses_score_zero(
    cap: int | None, split: str
) -> None:
    task = get_task(
        "ifeval-gen",
        kinds=DEFAULT_JOB_KINDS,
        max_constraints=2,
        max_response_tokens=cap,
        val_size=500,
        test_size=500,
    )
    budget = task.word_budget if task.word_budget is not None else 10**6
    for i in range(500):
        ex = task.example(i, split)
        ids, kwargs = ex.meta["instruction_id_list"], ex.meta["kwargs"]
        # The constraint set alone (no gate) is already failed by the empty response.
        assert score_ifeval("", ids, kwargs, ex.question).reason == "wrong", ids
        for trivial in ("", ex.question, "xyzzy plover"):
            assert task.score(trivial, ex).reward == 0.0, (ids, trivial)
        good = _default_kinds_response(ids, kwargs, budget)
        assert count_words(good) <= budget
        score = task.score(good, ex)
        assert score.reward == 1.0 and score.details["gate"]["ok"], (ids, kwargs, good, score)


@pytest.mark.parametrize("cap", [*CAPS, 32])
def test_all_kinds_prompts_fit_the_cap_and_fail_the_empty_response(cap: int | None) -> None:
    task = get_task("ifeval-gen", max_response_tokens=cap, val_size=500, test_size=500)
    budget = task.word_budget
    assert budget == (None if cap is None else int(cap * WORDS_PER_TOKEN))
    for split in ("train", "val", "test"):
        for i in range(500):
            ex = task.example(i, split)
            ids, kwargs = ex.meta["instruction_id_list"], ex.meta["kwargs"]
            assert score_ifeval("", ids, kwargs, ex.question).reason == "wrong", ids
            assert task.score("", ex).reward == 0.0
            assert task.score(ex.question, ex).reward == 0.0
            need = words_needed(ids, kwargs)
            assert budget is None or need <= budget, (ids, kwargs, need)
            for kind, kw in zip(ids, kwargs, strict=True):
                if kind == "length_constraints:number_words":
                    # "at least N" is reachable within the cap; "fewer than N" binds in it
                    # and leaves room for the required words.
                    assert budget is None or kw["num_words"] <= budget, kw
                    if kw["relation"] == "less than":
                        assert need < kw["num_words"], (ids, kwargs)
                if kind == "length_constraints:number_sentences" and budget is not None:
                    assert kw["num_sentences"] * 3 <= budget or kw["relation"] == "less than"


def test_infeasible_explains_rejections() -> None:
    words = "length_constraints:number_words"
    assert "empty response" in infeasible(["punctuation:no_comma"], [{}], "Write.", None)
    long = [{"num_words": 100, "relation": "at least"}]
    assert "cap allows 38" in infeasible([words], long, "Write.", 38)
    assert infeasible([words], long, "Write.", None) == ""
    ids = [words, "startend:end_checker"]
    few = [{"num_words": 15, "relation": "less than"}, {"end_phrase": "That is all."}]
    assert infeasible(ids, few, "Write.", None) == ""
    few[1] = {"end_phrase": "Let me know if you have additional questions."}
    assert infeasible(ids, few, "Write.", None) == ""  # 5 own + 8 forced words < 15
    few[0] = {"num_words": 13, "relation": "less than"}
    assert "impossible" in infeasible(ids, few, "Write.", None)
    loose = [{"num_words": 150, "relation": "less than"}, {"end_phrase": "That is all."}]
    assert "always holds" in infeasible(ids, loose, "Write.", 38)
    letter = ["keywords:letter_frequency", "startend:end_checker"]
    kws = [
        {"letter": "e", "let_frequency": 2, "let_relation": "less than"},
        {"end_phrase": "Hope this helps!"},
    ]
    assert "force in" in infeasible(letter, kws, "Write.", None)


def test_cap_and_kind_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_response_tokens"):
        IFEvalGenTask(max_response_tokens=16)
    with pytest.raises(ValueError, match="empty response"):
        IFEvalGenTask(kinds="punctuation:no_comma,keywords:forbidden_words")
    assert IFEvalGenTask(max_response_tokens=64).word_budget == 38


def test_task_protocol_answer_format_and_reference() -> None:
    task = get_task("ifeval-gen")
    ex = task.example(0)
    assert task.format_answer("") == "" and task.format_answer("xyzzy plover") == "xyzzy plover"
    assert task.reference_response(ex) is None
    assert json.loads(ex.answer)["content_gate"] == ex.meta["content_gate"]
    assert ex.meta["content_gate"] == {"min_words": 5, "max_echo": 0.5}


@pytest.mark.parametrize(
    "settings",
    [{"kinds": DEFAULT_JOB_KINDS, "max_constraints": 2}, {}, {"max_response_tokens": 64}],
)
def test_selfcheck_passes(settings: dict[str, Any]) -> None:
    for split in ("train", "val"):
        result = check_task(get_task("ifeval-gen", **settings), problems=50, split=split)
        assert result.ok and result.problems == 50, result.verdict()


def test_gate_decides_partial_credit_and_is_recorded() -> None:
    task = get_task("ifeval-gen", kinds=DEFAULT_JOB_KINDS, min_constraints=2, max_constraints=2)
    ex = next(
        e
        for e in (task.example(i) for i in range(100))
        if set(e.meta["instruction_id_list"]) == {"punctuation:no_comma", "startend:end_checker"}
    )
    end = ex.meta["kwargs"][ex.meta["instruction_id_list"].index("startend:end_checker")]
    phrase = end["end_phrase"]
    # A real attempt that misses the end phrase keeps its partial credit.
    half = task.score(_filler(12), ex)
    assert half.reward == 0.5 and half.details["gate"]["ok"]
    # The end phrase alone (copied from the prompt) is no attempt: 0, though it meets both.
    bare = task.score(phrase, ex)
    assert bare.reward == 0.0 and bare.details["n_passed"] == 2
    assert not bare.details["gate"]["ok"] and bare.details["gate"]["own_words"] == 0
    # The prompt echoed back with the end phrase tacked on: mostly copied.
    echo = task.score(ex.question.replace(",", "") + " " + phrase, ex)
    assert echo.reward == 0.0 and not echo.details["gate"]["ok"]
    full = task.score(f"{_filler(10)} {phrase}", ex)
    assert full.reward == 1.0 and full.reason == "ok"
