"""ifeval-gen: determinism, disjoint splits, rendering, compatibility, end-to-end scoring."""

from __future__ import annotations

import json
from typing import Any

import pytest

from prorl.tasks import get_task
from prorl.tasks.ifeval import CONFLICTS, SAMPLERS, IFEvalGenTask
from prorl.verify import get_verifier
from prorl.verify.ifeval import INSTRUCTION_IDS, validate_spec


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


_LANGUAGE_NAMES = {"fr": "French", "es": "Spanish", "de": "German", "it": "Italian",
                   "pt": "Portuguese", "nl": "Dutch", "sv": "Swedish", "pl": "Polish"}  # fmt: skip


# Text each instruction's rendering must contain, given its kwargs.
def _expected_wording(iid: str, kw: dict[str, Any]) -> list[str]:
    rel = kw.get("relation") or kw.get("let_relation") or kw.get("capital_relation")
    words = [{"less than": "fewer than", "at least": "at least"}[rel]] if rel else []
    for key in ("num_sentences", "num_paragraphs", "num_words", "num_placeholders",
                "num_bullets", "num_highlights", "num_sections", "frequency", "let_frequency",
                "capital_frequency"):  # fmt: skip
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
