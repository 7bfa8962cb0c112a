"""IFEval verifier: one passing and one failing hand-written response per instruction kind."""

from __future__ import annotations

import json

import pytest

from prorl.types import Example
from prorl.verify import get_verifier
from prorl.verify.ifeval import (
    INSTRUCTION_IDS,
    ContentGate,
    check_instruction,
    content_gate,
    score_ifeval,
    validate_spec,
)
from prorl.verify.ifeval_text import count_sentences, count_words

LOWER = "the library opens at nine and closes at six. i like to read there on quiet mornings."
STORY = (
    "The old lighthouse keeper climbed the stairs every night. He polished the lens until it "
    "shone. One evening a storm rolled in from the west and he saw a small boat."
)
THREE_PARAS = "First, we set up camp.\n***\nThen we cooked dinner.\n***\nFinally we slept."
FOUR_BLANK_PARAS = (
    "Summer is the best season.\n\nIt brings long days.\n\n"
    "Moreover, the beaches are warm.\n\nIn short, I love it."
)
JSON_OK = '```json\n{"city": "Lisbon", "population": 545000}\n```'
REPEAT = "Write a haiku about rain. Do not use commas."
T = True
F = False

# (instruction id, kwargs, response, expected)
CASES = [
    (
        "keywords:existence",
        {"keywords": ["river", "bridge"]},
        "The bridge crosses a wide river.",
        T,
    ),
    ("keywords:existence", {"keywords": ["river", "bridge"]}, "The bridge is made of stone.", F),
    ("keywords:existence", {"keywords": ["cat"]}, "Education matters to everyone.", F),
    (
        "keywords:frequency",
        {"keyword": "moon", "frequency": 3, "relation": "at least"},
        "The Moon rose. The moon was full. I love the moon.",
        T,
    ),
    (
        "keywords:frequency",
        {"keyword": "moon", "frequency": 3, "relation": "at least"},
        "The moon rose over the moonlit bay.",
        F,
    ),
    (
        "keywords:frequency",
        {"keyword": "very", "frequency": 2, "relation": "less than"},
        "It was a very long day.",
        T,
    ),
    (
        "keywords:frequency",
        {"keyword": "very", "frequency": 2, "relation": "less than"},
        "It was very, very long.",
        F,
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["good", "nice"]},
        "The meal was excellent and the staff were kind.",
        T,
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["good", "nice"]},
        "Overall it was a Good experience.",
        F,
    ),
    ("keywords:forbidden_words", {"forbidden_words": ["art"]}, "She started early.", T),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
        "The lazy zebra dozed.",
        T,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
        "The lazy cat slept.",
        F,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "E", "let_frequency": 3, "let_relation": "less than"},
        "A dog ran far.",
        T,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "e", "let_frequency": 3, "let_relation": "less than"},
        "Eleven geese flew.",
        F,
    ),
    (
        "language:response_language",
        {"language": "fr"},
        "Le chat dort sur le canapé pendant que la pluie tombe.",
        T,
    ),
    (
        "language:response_language",
        {"language": "fr"},
        "The cat sleeps on the sofa while the rain falls.",
        F,
    ),
    (
        "language:response_language",
        {"language": "de"},
        "Der Hund spielt im Garten mit dem Ball.",
        T,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "Dr. Smith arrived at 5 p.m. and left early. It rained.",
        T,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        STORY,
        F,
    ),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}, STORY, T),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, THREE_PARAS, T),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "***\n" + THREE_PARAS, T),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, THREE_PARAS, F),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 3},
        "One.\n***\n***\nTwo.\n***\nThree.",
        F,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 10, "relation": "less than"},
        "I don't know the answer yet.",
        T,
    ),
    ("length_constraints:number_words", {"num_words": 10, "relation": "less than"}, STORY, F),
    ("length_constraints:number_words", {"num_words": 30, "relation": "at least"}, STORY, T),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 4, "nth_paragraph": 3, "first_word": "moreover"},
        FOUR_BLANK_PARAS,
        T,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 4, "nth_paragraph": 2, "first_word": "moreover"},
        FOUR_BLANK_PARAS,
        F,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 3, "first_word": "moreover"},
        FOUR_BLANK_PARAS,
        F,
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], your order ships to [address] on Monday.",
        T,
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], your order ships on Monday. [ ]",
        F,
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "See you at the party!\n\nP.S. Bring a jacket, it gets cold.",
        T,
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "See you at the party! Bring a jacket.",
        F,
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        "Thanks again.\nP.S. Call me.\nP.P.S. Feed the cat.",
        T,
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        "Thanks again.\nP.S. Call me.",
        F,
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 3},
        "Packing list:\n* Tent\n* Stove\n- Water filter\n",
        T,
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 3},
        "Packing list:\n* Tent\n* Stove\n\n---\n1. Water filter",
        F,
    ),
    ("detectable_format:constrained_response", {}, "I checked the forecast. My answer is no.", T),
    (
        "detectable_format:constrained_response",
        {},
        "My answer is yes. My answer is no. My answer is maybe.",
        F,
    ),
    ("detectable_format:constrained_response", {}, "Probably not.", F),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "The *first step* is to read. The **second step** is to write.",
        T,
    ),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "* one bullet\n* another bullet\nOnly *this* is highlighted.",
        F,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nGather wood.\n\nSECTION 2\nLight the fire.",
        T,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "Section 1\nGather wood.\n\nSection 2\nLight the fire.",
        F,
    ),
    ("detectable_format:json_format", {}, JSON_OK, T),
    ("detectable_format:json_format", {}, "[1, 2, 3]", T),
    ("detectable_format:json_format", {}, 'Here is the JSON: {"city": "Lisbon"}', F),
    ("detectable_format:json_format", {}, "42", F),
    ("detectable_format:title", {}, "<<Ode to Autumn>>\n\nLeaves fall softly.", T),
    ("detectable_format:title", {}, "Ode to Autumn\n\nLeaves fall softly. << >>", F),
    ("combination:two_responses", {}, "Tea is calming.\n******\nCoffee is energising.", T),
    ("combination:two_responses", {}, "Tea is calming.\n******\nTea is calming.", F),
    ("combination:two_responses", {}, "Tea is calming. Coffee is energising.", F),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": REPEAT},
        "Write a haiku about rain.\nDo not use commas.\n\nSoft rain on the roof",
        T,
    ),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": REPEAT},
        "Sure! Write a haiku about rain. Do not use commas.",
        F,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Is there anything else I can help with?"},
        "Paris is the capital of France. Is there anything else I can help with?  \n",
        T,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Is there anything else I can help with?"},
        "Paris is the capital. Is there anything else I can help with? Bye.",
        F,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "This is VERY important and URGENT.",
        T,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "I think A VERY small change helps.",
        F,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "NASA launched a rocket.",
        T,
    ),
    ("change_case:english_capital", {}, "THE TRAIN LEAVES AT NOON, SO PLEASE BE ON TIME.", T),
    ("change_case:english_capital", {}, "THE TRAIN LEAVES AT NOON, so please be on time.", F),
    (
        "change_case:english_capital",
        {},
        "LE TRAIN PART À MIDI, SOYEZ À L'HEURE S'IL VOUS PLAÎT.",
        F,
    ),
    ("change_case:english_lowercase", {}, LOWER, T),
    ("change_case:english_lowercase", {}, LOWER.replace("i like", "I like"), F),
    ("punctuation:no_comma", {}, "We walked home and then we ate.", T),
    ("punctuation:no_comma", {}, "We walked home, and then we ate.", F),
    ("startend:quotation", {}, '"Stay curious and keep learning."', T),
    ("startend:quotation", {}, "\u201cStay curious.\u201d", T),
    ("startend:quotation", {}, 'He said "stay curious".', F),
]


@pytest.mark.parametrize(("iid", "kwargs", "response", "expected"), CASES)
def test_check_instruction(iid: str, kwargs: dict, response: str, expected: bool) -> None:
    assert check_instruction(iid, kwargs, response) is expected


def test_table_covers_every_kind_both_ways() -> None:
    assert len(INSTRUCTION_IDS) == 25
    for iid in INSTRUCTION_IDS:
        outcomes = {expected for i, _, _, expected in CASES if i == iid}
        assert outcomes == {True, False}, iid
    assert len(CASES) >= 50


def test_counting_rules() -> None:
    assert count_words("I don't know -- it's 3.5 km, well-known.") == 7
    text = "Mr. Lee met J. R. R. Tolkien. Wow!\n\n<<A Title>>\n\n1. Buy milk.\n2. Eat."
    assert count_sentences(text) == 5  # "1." and "2." are list enumerators, not sentences


def test_fraction_reward_and_details() -> None:
    ids = ["punctuation:no_comma", "change_case:english_lowercase", "startend:end_checker"]
    kwargs = [{}, {}, {"end_phrase": "Peace!"}]
    score = score_ifeval("the sun is warm, and the sea is calm today.", ids, kwargs)
    assert score.reward == pytest.approx(1 / 3)
    assert score.reason == "wrong"
    assert [r["ok"] for r in score.details["results"]] == [False, True, False]
    full = score_ifeval("the sun is warm and the sea is calm today. peace!", ids, kwargs)
    assert (full.reward, full.reason, full.details["n_passed"]) == (1.0, "ok", 3)


def test_only_text_after_last_think_is_judged() -> None:
    ids, kwargs = ["punctuation:no_comma", "startend:quotation"], [{}, {}]
    thought = "<think>Hmm, commas, lots, of, them.</think><think>again, </think>"
    assert score_ifeval(thought + ' "No commas here."', ids, kwargs).reward == 1.0
    assert score_ifeval('"x" </think> yes, a comma', ids, kwargs).reward == 0.0
    assert check_instruction("punctuation:no_comma", {}, "a, b</think>clean")


def test_huggingface_nulls_and_float_ints_are_accepted() -> None:
    all_keys = dict.fromkeys(["num_highlights", "relation", "num_words", "keywords", "letter"])
    kw = {**all_keys, "num_words": 5.0, "relation": "less than"}
    assert check_instruction("length_constraints:number_words", kw, "Short reply.")


@pytest.mark.parametrize(
    ("ids", "kwargs", "message"),
    [
        (["count:keywords_multiple"], [{}], "count:keywords_multiple"),
        (["punctuation:no_comma"], [{}, {}], "one dict per instruction"),
        (["length_constraints:number_words"], [{"num_words": 5}], "relation"),
        (
            ["length_constraints:number_words"],
            [{"num_word": 5, "relation": "at least"}],
            "num_word",
        ),
        (
            ["keywords:frequency"],
            [{"keyword": "a", "frequency": 1, "relation": "at most"}],
            "at most",
        ),
        (["language:response_language"], [{"language": "klingon"}], "klingon"),
        (["combination:repeat_prompt"], [{}], "prompt_to_repeat"),
        ([], [], "empty"),
    ],
)
def test_bad_specs_raise_naming_the_problem(ids: list, kwargs: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_spec(ids, kwargs)


def _example(meta: dict, answer: str = "") -> Example:
    prompt = ({"role": "user", "content": "Say hi. Do not use commas."},)
    return Example(uid="u", task="ifeval", prompt=prompt, answer=answer, meta=meta)


def test_registered_verifier_reads_meta_or_answer_json() -> None:
    verify = get_verifier("ifeval")
    spec = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    assert verify("hi there", _example(spec)).reward == 1.0
    assert verify("hi, there", _example({}, json.dumps(spec))).reward == 0.0
    # repeat_prompt without prompt_to_repeat falls back to the example's prompt.
    rep = {"instruction_id_list": ["combination:repeat_prompt"], "kwargs": [{}]}
    assert verify("Say hi.  Do not use commas. hi", _example(rep)).reward == 1.0


def test_verifier_never_raises() -> None:
    verify = get_verifier("ifeval")
    bad = verify("hello", _example({}, "not json"))
    assert bad.reason == "INFRA_ERROR" and bad.reward == 0.0
    ids = list(INSTRUCTION_IDS)
    kwargs = [validate_kwargs_example(i) for i in ids]
    spec = _example({"instruction_id_list": ids, "kwargs": kwargs})
    # Inputs that made earlier regexes quadratic (minutes each) or that break parsers.
    nasty = ["", "[" * 100_000, "*" * 50_000, "\x00\ud800", "<<" * 1000, "P.S.\n" * 20_000]
    nasty += ["." * 100_000, "a. " * 30_000, "!" * 50_000 + "x", "{" * 50_000]
    for response in nasty:
        score = verify(response, spec)
        assert 0.0 <= score.reward <= 1.0 and score.reason in ("ok", "wrong")
    assert verify(None, spec).reason == "wrong"  # type: ignore[arg-type]


def validate_kwargs_example(iid: str) -> dict:
    """Some valid kwargs for each id, taken from the table."""
    return next(kw for i, kw, _, _ in CASES if i == iid)


IFEVAL_KEYS = (  # noqa: SIM905
    "num_highlights relation num_words num_placeholders prompt_to_repeat num_bullets "
    "section_spliter num_sections capital_relation capital_frequency keywords num_paragraphs "
    "language let_relation letter let_frequency end_phrase forbidden_words keyword frequency "
    "num_sentences postscript_marker first_word nth_paragraph"
).split()


def test_huggingface_ifeval_row_scores_unchanged() -> None:
    """A row in the Hugging Face IFEval layout: every key in every kwargs dict, unused = null."""
    row = {
        "key": 1001,
        "prompt": "Write a note to a neighbour about a lost cat. Do not use commas. "
        "Highlight at least 2 sections with markdown. End with 'Thank you.'",
        "instruction_id_list": [
            "punctuation:no_comma",
            "detectable_format:number_highlighted_sections",
            "startend:end_checker",
        ],
        "kwargs": [
            dict.fromkeys(IFEVAL_KEYS),
            {**dict.fromkeys(IFEVAL_KEYS), "num_highlights": 2},
            {**dict.fromkeys(IFEVAL_KEYS), "end_phrase": "Thank you."},
        ],
    }
    example = Example(
        uid="hf:1001",
        task="ifeval",
        prompt=({"role": "user", "content": row["prompt"]},),
        answer=json.dumps(row),
    )
    verify = get_verifier("ifeval")
    good = "Hi! Our cat *Milo* is missing. He has a *red collar* and a white tail. Thank you."
    assert verify(good, example).reward == 1.0
    half = "Hi, our cat Milo is missing. He has a *red collar*. Thank you."
    assert verify(half, example).reward == pytest.approx(1 / 3)


# --- content gate ---------------------------------------------------------------------

GATE_PROMPT = (
    "Write a poem about the moon over a quiet city.\n"
    "Do not use any commas in your response.\n"
    "Finish your response with this exact phrase: Any other questions? No other words should "
    "follow this phrase."
)
GATE = ContentGate(min_words=5, max_echo=0.5)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("", False),
        ("xyzzy plover", False),  # too few words
        (GATE_PROMPT, False),  # the echo: nothing of its own
        (GATE_PROMPT + " silver roofs shine tonight softly", False),  # own 5, mostly copied
        ("Silver light falls on sleeping roofs and empty streets.", True),
        # Restating the topic is fine while most words are the response's own.
        ("The moon over a quiet city hums above sleeping roofs and streets.", True),
        ("The moon over a quiet city glows.", False),  # only 2 words of its own
    ],
)
def test_content_gate(text: str, ok: bool) -> None:
    verdict = content_gate(text, GATE_PROMPT, GATE)
    assert verdict["ok"] is ok, verdict
    assert set(verdict) == {"ok", "own_words", "copied_words", "echo", "min_words", "max_echo"}


def test_content_gate_ignores_text_constraints_ask_to_copy() -> None:
    body = "Silver light falls on sleeping roofs."
    end = "Any other questions?"
    plain = content_gate(f"{body} {end}", GATE_PROMPT, GATE)
    assert plain["ok"] and plain["copied_words"] == 3  # the phrase is in the prompt
    neutral = content_gate(f"{body} {end}", GATE_PROMPT, GATE, required=[end])
    assert neutral["copied_words"] == 0 and neutral["own_words"] == 6
    assert not content_gate(end, GATE_PROMPT, GATE, required=[end])["ok"]
    # A requested repetition of the prompt is not an echo; what follows it must still be own.
    request = "Write a poem about the moon over a quiet city."
    repeated = content_gate(f"{request} {body}", GATE_PROMPT, GATE, repeated=request)
    assert repeated["ok"] and repeated["own_words"] == 6 and repeated["copied_words"] == 0
    assert not content_gate(request, GATE_PROMPT, GATE, repeated=request)["ok"]


def test_gate_applies_only_where_the_spec_asks_for_it() -> None:
    verify = get_verifier("ifeval")
    spec = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    # A file row (IFEval's own data): no gate, "hi there" passes as before.
    plain = verify("hi there", _example(spec))
    assert plain.reward == 1.0 and "gate" not in plain.details
    gated = {**spec, "content_gate": {"min_words": 5, "max_echo": 0.5}}
    for ex in (_example(gated), _example({}, json.dumps(gated))):
        short = verify("hi there", ex)
        assert short.reward == 0.0 and short.reason == "wrong" and not short.details["gate"]["ok"]
        assert short.details["n_passed"] == 1  # the constraint results stay visible
        assert verify("Hello neighbour how are you doing today", ex).reward == 1.0
        assert verify("Say hi. Do not use commas.", ex).reward == 0.0  # the echo
    broken = {**spec, "content_gate": {"min_words": 0}}
    assert verify("hello there friend", _example(broken)).reason == "INFRA_ERROR"
    assert verify("hello there friend", _example({**spec, "content_gate": 5})).is_infra_error


def test_score_ifeval_gate_argument_and_nasty_inputs() -> None:
    ids, kwargs = ["punctuation:no_comma", "startend:end_checker"], [{}, {"end_phrase": "Bye."}]
    half = score_ifeval("a b c d e f", ids, kwargs, prompt="Say hi.", gate=GATE)
    assert half.reward == 0.5 and half.details["gate"]["ok"]
    zero = score_ifeval("Bye.", ids, kwargs, prompt="Say hi. End with Bye.", gate=GATE)
    assert zero.reward == 0.0 and zero.details["n_passed"] == 2
    for nasty in ("a " * 200_000, "x" * 100_000, "[" * 50_000, "\x00\ud800"):
        score = score_ifeval(nasty, ids, kwargs, prompt=GATE_PROMPT, gate=GATE)
        assert 0.0 <= score.reward <= 1.0
