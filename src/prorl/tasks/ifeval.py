"""``ifeval-gen``: IFEval-style prompts generated offline, scored by the ``ifeval`` verifier.

Each item is a writing request (one of ~50 topics) plus 1-3 compatible constraints with random
kwargs, rendered as natural instructions. The spec is stored in IFEval's format in ``meta``
and, as JSON, in ``answer``. Item i of a split is rebuilt from (seed, split, i).

Splits are disjoint by construction: a prompt's *content* (topic, ids, kwargs; not its
wording and not the seed) hashes to a bucket that fixes its split (80% train, 10% val, 10%
test), and item i of a split is the first candidate drawn for (seed, split, i) whose bucket
belongs to that split. So no val/test constraint set ever appears in training, for any seed.

Honest rewards: a drawn constraint set is kept only if the empty response fails it and, under
``max_response_tokens``, a response that fits the cap can satisfy it (and "fewer than N"
limits can be broken within the cap, so they bind). The spec carries a ``content_gate``: a
response without a few words of its own, or mostly copied from the prompt, scores 0. See
docs/ifeval.md.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from prorl.tasks.base import SPLITS, register_task
from prorl.types import Example, Score
from prorl.verify.ifeval import (
    INSTRUCTION_IDS,
    ContentGate,
    score_ifeval,
    score_ifeval_example,
    validate_spec,
)
from prorl.verify.ifeval_text import count_sentences, count_words
from prorl.verify.registry import as_score

TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("a short story about a lighthouse keeper", ("lighthouse", "storm", "ship")),
    ("an email to a landlord about a broken heater", ("heater", "repair", "cold")),
    ("a poem about the first snow of winter", ("snow", "silence", "window")),
    ("a product description for a reusable water bottle", ("bottle", "plastic", "travel")),
    ("a blog post about learning to bake bread", ("flour", "oven", "dough")),
    ("a thank-you note to a teacher", ("lesson", "patience", "school")),
    ("a review of a small neighborhood cafe", ("coffee", "pastry", "service")),
    ("a story about a robot that learns to paint", ("robot", "canvas", "color")),
    ("advice for a student starting university", ("study", "friends", "sleep")),
    ("a description of a busy train station", ("platform", "crowd", "ticket")),
    ("a letter to your future self", ("future", "dream", "memory")),
    ("a guide to caring for a houseplant", ("water", "sunlight", "soil")),
    ("a speech for a friend's wedding", ("love", "toast", "family")),
    ("a news report about a local marathon", ("runners", "finish", "record")),
    ("a fable about a fox and a crow", ("fox", "crow", "cheese")),
    ("tips for saving money on groceries", ("budget", "list", "discount")),
    ("a diary entry from a sailor lost at sea", ("ocean", "compass", "wind")),
    ("an explanation of why the sky is blue", ("light", "atmosphere", "scattering")),
    ("a pitch for a mobile app that tracks habits", ("habit", "streak", "reminder")),
    ("a description of an autumn forest", ("leaves", "trees", "path")),
    ("a complaint about a delayed flight", ("airport", "delay", "refund")),
    ("a bedtime story about a sleepy dragon", ("dragon", "cave", "stars")),
    ("a summary of the benefits of daily walking", ("health", "steps", "heart")),
    ("an invitation to a community garden party", ("garden", "music", "neighbors")),
    ("a short biography of an imaginary inventor", ("invention", "workshop", "patent")),
    ("a travel guide to a seaside town", ("beach", "harbor", "seafood")),
    ("a motivational message for a sports team", ("team", "practice", "victory")),
    ("an essay on the importance of libraries", ("books", "library", "community")),
    ("a recipe introduction for tomato soup", ("tomato", "soup", "basil")),
    ("a story about a lost dog finding its way home", ("dog", "home", "rain")),
    ("a job application for a bakery assistant", ("bakery", "experience", "customers")),
    ("a description of a thunderstorm at night", ("thunder", "lightning", "darkness")),
    ("a short talk about recycling at school", ("recycling", "waste", "planet")),
    ("a message apologizing for missing a meeting", ("meeting", "sorry", "schedule")),
    ("a story about two friends building a treehouse", ("treehouse", "wood", "ladder")),
    ("a guide to preparing for a job interview", ("interview", "questions", "confidence")),
    ("a poem about the moon over a quiet city", ("moon", "city", "night")),
    ("an announcement of a new bus route", ("bus", "route", "passengers")),
    ("a review of a fantasy novel", ("novel", "hero", "magic")),
    ("a note asking a neighbor to water your plants", ("plants", "keys", "vacation")),
    ("a description of a mountain sunrise", ("mountain", "sunrise", "valley")),
    ("an explanation of how bees make honey", ("bees", "honey", "flowers")),
    ("a story about a musician's first concert", ("guitar", "stage", "audience")),
    ("a list of reasons to learn a second language", ("language", "culture", "travel")),
    ("a postcard from a trip to the desert", ("desert", "sand", "camel")),
    ("an introduction for a school science fair", ("science", "experiment", "students")),
    ("a story about a clock that stopped at midnight", ("clock", "midnight", "secret")),
    ("a description of a winter market", ("market", "lanterns", "cocoa")),
    ("a letter encouraging a friend who failed an exam", ("exam", "effort", "chance")),
    ("a short history of the bicycle", ("bicycle", "wheels", "invention")),
)

_NUMBER_WORDS = (15, 20, 30, 40, 50, 60, 80, 100, 150)
_END_PHRASES = (
    "Is there anything else I can help with?",
    "Let me know if you have additional questions.",
    "Any other questions?",
    "That is all.",
    "Hope this helps!",
    "The end.",
)
_FIRST_WORDS = ("however", "first", "finally", "moreover", "today", "imagine", "remember")
_FORBIDDEN = ("very", "really", "good", "thing", "important", "also", "just", "many", "nice")
_LANGUAGES = {
    "fr": "French",
    "es": "Spanish",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "sv": "Swedish",
    "pl": "Polish",
}
_SPLITERS = ("Section", "SECTION", "Part", "PART", "Chapter")
_RELATIONS = ("less than", "at least")

Sampler = Callable[[random.Random, tuple[str, ...]], dict[str, Any]]


def _no_kwargs(rng: random.Random, keywords: tuple[str, ...]) -> dict[str, Any]:
    return {}


# kind -> draws its kwargs from (rng, topic keywords).
SAMPLERS: dict[str, Sampler] = {
    "keywords:existence": lambda r, kw: {"keywords": r.sample(kw, r.randint(1, 2))},
    "keywords:frequency": lambda r, kw: {"keyword": r.choice(kw), **_count(r, 3, "frequency")},
    "keywords:forbidden_words": lambda r, kw: {"forbidden_words": r.sample(_FORBIDDEN, 2)},
    "keywords:letter_frequency": lambda r, kw: {
        "letter": r.choice("etaoinshrdlucmwyb"),
        **_count(r, 8, "let_frequency", "let_relation"),
    },
    "language:response_language": lambda r, kw: {"language": r.choice(sorted(_LANGUAGES))},
    "length_constraints:number_sentences": lambda r, kw: {
        "num_sentences": r.randint(2, 8),
        "relation": r.choice(_RELATIONS),
    },
    "length_constraints:number_paragraphs": lambda r, kw: {"num_paragraphs": r.randint(2, 4)},
    "length_constraints:number_words": lambda r, kw: {
        "num_words": r.choice(_NUMBER_WORDS),
        "relation": r.choice(_RELATIONS),
    },
    "length_constraints:nth_paragraph_first_word": lambda r, kw: _nth_paragraph(r),
    "detectable_content:number_placeholders": lambda r, kw: {"num_placeholders": r.randint(1, 3)},
    "detectable_content:postscript": lambda r, kw: {
        "postscript_marker": r.choice(("P.S.", "P.P.S"))
    },
    "detectable_format:number_bullet_lists": lambda r, kw: {"num_bullets": r.randint(2, 5)},
    "detectable_format:constrained_response": _no_kwargs,
    "detectable_format:number_highlighted_sections": lambda r, kw: {
        "num_highlights": r.randint(1, 3)
    },
    "detectable_format:multiple_sections": lambda r, kw: {
        "section_spliter": r.choice(_SPLITERS),
        "num_sections": r.randint(2, 4),
    },
    "detectable_format:json_format": _no_kwargs,
    "detectable_format:title": _no_kwargs,
    "combination:two_responses": _no_kwargs,
    "combination:repeat_prompt": _no_kwargs,  # prompt_to_repeat is filled in when rendering
    "startend:end_checker": lambda r, kw: {"end_phrase": r.choice(_END_PHRASES)},
    "change_case:capital_word_frequency": lambda r, kw: _count(
        r, 5, "capital_frequency", "capital_relation"
    ),
    "change_case:english_capital": _no_kwargs,
    "change_case:english_lowercase": _no_kwargs,
    "punctuation:no_comma": _no_kwargs,
    "startend:quotation": _no_kwargs,
}


def _count(rng: random.Random, hi: int, key: str, rel_key: str = "relation") -> dict[str, Any]:
    """A count and a relation; "less than 1" (i.e. never) is avoided as it reads oddly."""
    relation = rng.choice(_RELATIONS)
    return {key: rng.randint(2 if relation == "less than" else 1, hi), rel_key: relation}


def _nth_paragraph(rng: random.Random) -> dict[str, Any]:
    n = rng.randint(2, 4)
    return {
        "num_paragraphs": n,
        "nth_paragraph": rng.randint(1, n),
        "first_word": rng.choice(_FIRST_WORDS),
    }


# kind -> wordings; fields are the kwargs plus those _render derives (cmp, times, lists).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "keywords:existence": (
        "Include the keywords {keywords_quoted}.",
        "Make sure to use the words {keywords_and}.",
    ),
    "keywords:frequency": ("The word '{keyword}' should appear {cmp} {times}.",),
    "keywords:forbidden_words": (
        "Do not include the words {forbidden_or}.",
        "Avoid using these words: {forbidden_list}.",
    ),
    "keywords:letter_frequency": (
        "The letter '{letter}' should appear {cmp} {times} in your response.",
    ),
    "language:response_language": (
        "Your entire response must be in {language_name}; no other language is allowed.",
    ),
    "length_constraints:number_sentences": (
        "Your response should contain {cmp} {num_sentences} sentences.",
        "Answer in {cmp} {num_sentences} sentences.",
    ),
    "length_constraints:number_paragraphs": (
        "There should be exactly {num_paragraphs} paragraphs, separated from each other with "
        "the markdown divider: ***",
    ),
    "length_constraints:number_words": (
        "Answer with {cmp} {num_words} words.",
        "Your response should be {cmp} {num_words} words long.",
    ),
    "length_constraints:nth_paragraph_first_word": (
        "There should be exactly {num_paragraphs} paragraphs, separated by blank lines. "
        "Paragraph {nth_paragraph} must start with the word '{first_word}'.",
    ),
    "detectable_content:number_placeholders": (
        "Include at least {num_placeholders} placeholders in square brackets, such as [name].",
    ),
    "detectable_content:postscript": (
        "At the end of your response, add a postscript starting with {postscript_marker}",
    ),
    "detectable_format:number_bullet_lists": (
        "Your answer must contain exactly {num_bullets} bullet points in markdown format, "
        "such as:\n* This is a point.",
    ),
    "detectable_format:constrained_response": (
        "Answer with one of the following options: 'My answer is yes.', 'My answer is no.', "
        "'My answer is maybe.'",
    ),
    "detectable_format:number_highlighted_sections": (
        "Highlight at least {num_highlights} parts of your answer with markdown, for example "
        "*highlighted part*.",
    ),
    "detectable_format:multiple_sections": (
        "Your response must have {num_sections} sections. Mark the beginning of each section "
        "with {section_spliter} X, such as: {section_spliter} 1",
    ),
    "detectable_format:json_format": (
        "Wrap your entire output in JSON format. You can use markdown ticks such as ```.",
    ),
    "detectable_format:title": (
        "Your answer must contain a title, wrapped in double angular brackets, such as "
        "<<poem of joy>>.",
    ),
    "combination:two_responses": (
        "Give two different responses. Separate the responses with 6 asterisk symbols: ******",
    ),
    "combination:repeat_prompt": (
        "First repeat the request above word for word without change, then give your answer. "
        "Do not say anything before repeating the request; the request to repeat does not "
        "include this sentence.",
    ),
    "startend:end_checker": (
        "Finish your response with this exact phrase: {end_phrase} No other words should "
        "follow this phrase.",
    ),
    "change_case:capital_word_frequency": ("Use words with all capital letters {cmp} {times}.",),
    "change_case:english_capital": (
        "Your entire response should be in English, and in all capital letters.",
    ),
    "change_case:english_lowercase": (
        "Your entire response should be in English, and in all lowercase letters. "
        "No capital letters are allowed.",
        "Write everything in lowercase English letters; no capital letters at all.",
    ),
    "punctuation:no_comma": (
        "Do not use any commas in your response.",
        "In your entire response, refrain from the use of any commas.",
    ),
    "startend:quotation": ("Wrap your entire response with double quotation marks.",),
}


def _render(kind: str, kw: dict[str, Any], rng: random.Random) -> str:
    """One natural-language instruction for (kind, kwargs); wording varies with ``rng``."""
    rel = kw.get("relation") or kw.get("let_relation") or kw.get("capital_relation")
    count = kw.get("frequency") or kw.get("let_frequency") or kw.get("capital_frequency") or 0
    keywords, forbidden = kw.get("keywords", []), kw.get("forbidden_words", [])
    fields = {
        **kw,
        "cmp": {"less than": "fewer than", "at least": "at least"}.get(rel or "", ""),
        "times": "once" if count == 1 else f"{count} times",
        "keywords_quoted": ", ".join(f"'{k}'" for k in keywords),
        "keywords_and": " and ".join(keywords),
        "forbidden_or": " or ".join(forbidden),
        "forbidden_list": ", ".join(forbidden),
        "language_name": _LANGUAGES.get(kw.get("language", ""), ""),
    }
    return rng.choice(TEMPLATES[kind]).format(**fields)


# Kinds that cannot be satisfied together (or only by absurd text): at most one per group.
_EXCLUSIVE_GROUPS = (
    (
        "change_case:english_capital",
        "change_case:english_lowercase",
        "change_case:capital_word_frequency",
        "language:response_language",
    ),
    (
        "combination:repeat_prompt",
        "startend:quotation",
        "detectable_format:json_format",
        "combination:two_responses",
    ),
    ("startend:end_checker", "startend:quotation", "detectable_format:json_format"),
    (
        "detectable_format:json_format",
        "combination:two_responses",
        "length_constraints:number_paragraphs",
        "length_constraints:nth_paragraph_first_word",
        "detectable_format:multiple_sections",
        "detectable_format:constrained_response",
        "length_constraints:number_sentences",
    ),
    (
        "length_constraints:number_sentences",
        "length_constraints:number_words",
        "detectable_format:number_bullet_lists",
    ),
)
# Extra pairs: kind -> kinds it conflicts with.
_CONFLICTS = {
    "detectable_format:json_format": (
        "detectable_format:title",
        "punctuation:no_comma",
        "detectable_format:number_bullet_lists",
        "detectable_content:postscript",
        "detectable_format:number_highlighted_sections",
    ),
    "language:response_language": (
        "keywords:existence",
        "keywords:frequency",
        "keywords:forbidden_words",
        "combination:repeat_prompt",
        "startend:end_checker",
        "detectable_format:constrained_response",
    ),
    "change_case:english_lowercase": (
        "detectable_format:multiple_sections",
        "detectable_content:postscript",
        "startend:end_checker",
        "combination:repeat_prompt",
        "detectable_format:constrained_response",
    ),
    "change_case:english_capital": (
        "detectable_format:multiple_sections",
        "detectable_format:constrained_response",
    ),
    # The repeated request counts towards the response: it may hold commas, the forbidden
    # words, capitals or more words than a length limit allows.
    "combination:repeat_prompt": (
        "punctuation:no_comma",
        "keywords:forbidden_words",
        "keywords:letter_frequency",
        "change_case:capital_word_frequency",
        "change_case:english_capital",
        "length_constraints:number_words",
        "length_constraints:number_sentences",
    ),
}


def _conflict_pairs() -> frozenset[frozenset[str]]:
    pairs = {frozenset((a, b)) for g in _EXCLUSIVE_GROUPS for a in g for b in g if a != b}
    pairs |= {frozenset((a, b)) for a, bs in _CONFLICTS.items() for b in bs}
    return frozenset(pairs)


CONFLICTS = _conflict_pairs()
_SPLIT_BUCKETS = {"train": range(0, 80), "val": range(80, 90), "test": range(90, 100)}
_MAX_ATTEMPTS = 10_000

# Responses are cut at ``max_response_tokens``; a capped response is assumed to hold at least
# this many words per token (English prose runs ~0.75; markdown, numbers and rare words fewer),
# so constraints are sized for 0.6 * cap words.
WORDS_PER_TOKEN = 0.6
# The content gate every ifeval-gen spec carries (see prorl.verify.ifeval.content_gate).
CONTENT_GATE = ContentGate(min_words=5, max_echo=0.5)
# The smallest cap accepted: below it, the gate and a constraint hardly fit.
MIN_RESPONSE_TOKENS = 32
# Words a sentence, paragraph, bullet or section needs at least, when sizing a response.
_WORDS_PER_PART = 3
# Kinds that any additional text can only break (more commas, more words, more letters): the
# text the other constraints force into the response must already pass them.
_SHRINKING = ("punctuation:no_comma", "keywords:forbidden_words")


def _forced_text(ids: Sequence[str], kwargs: Sequence[dict[str, Any]]) -> list[str]:
    """Text a response satisfying (ids, kwargs) must contain, one piece per item."""
    pieces: list[str] = []
    for kind, kw in zip(ids, kwargs, strict=True):
        if kind == "startend:end_checker":
            pieces.append(kw["end_phrase"])
        elif kind == "combination:repeat_prompt":
            pieces.append(kw["prompt_to_repeat"])
        elif kind == "keywords:existence":
            pieces.extend(kw["keywords"])
        elif kind == "keywords:frequency" and kw["relation"] == "at least":
            pieces.extend([kw["keyword"]] * kw["frequency"])
        elif kind == "detectable_content:postscript":
            pieces.append(f"{kw['postscript_marker']} see you")
        elif kind == "detectable_format:multiple_sections":
            spliter = kw["section_spliter"]
            pieces.extend(f"{spliter} {i}" for i in range(1, kw["num_sections"] + 1))
        elif kind == "detectable_format:constrained_response":
            pieces.append("My answer is yes.")
        elif kind == "detectable_format:title":
            pieces.append("<<a title>>")
        elif kind == "length_constraints:nth_paragraph_first_word":
            pieces.append(kw["first_word"])
    return pieces


def words_needed(ids: Sequence[str], kwargs: Sequence[dict[str, Any]]) -> int:
    """A generous estimate of the words the shortest response satisfying (ids, kwargs) and the
    content gate needs: the gate's own words (or the structure's, if more: N sentences,
    paragraphs or bullets of ``_WORDS_PER_PART`` words, two responses), plus the words the
    constraints force in (end phrase, repeated request, keywords, markers, placeholders, ...),
    and at least N for "at least N words"."""
    structure = CONTENT_GATE.min_words
    forced = sum(count_words(p) for p in _forced_text(ids, kwargs))
    at_least = 0
    for kind, kw in zip(ids, kwargs, strict=True):
        relation = kw.get("relation") or kw.get("let_relation") or kw.get("capital_relation")
        if kind == "length_constraints:number_sentences" and relation == "at least":
            structure = max(structure, _WORDS_PER_PART * kw["num_sentences"])
        elif kind in (
            "length_constraints:number_paragraphs",
            "length_constraints:nth_paragraph_first_word",
        ):
            structure = max(structure, _WORDS_PER_PART * kw["num_paragraphs"])
        elif kind == "detectable_format:number_bullet_lists":
            structure = max(structure, _WORDS_PER_PART * kw["num_bullets"])
        elif kind == "combination:two_responses":
            structure = max(structure, 2 * CONTENT_GATE.min_words)
        elif kind == "detectable_content:number_placeholders":
            forced += kw["num_placeholders"]
        elif kind == "detectable_format:json_format":
            forced += 1  # a key
        elif kind == "keywords:letter_frequency" and relation == "at least":
            forced += kw["let_frequency"]  # a word per occurrence, to be safe
        elif kind == "change_case:capital_word_frequency" and relation == "at least":
            forced += kw["capital_frequency"]
        elif kind == "length_constraints:number_words" and relation == "at least":
            at_least = kw["num_words"]
    return max(structure + forced, at_least)


def infeasible(
    ids: Sequence[str], kwargs: Sequence[dict[str, Any]], prompt: str, word_budget: int | None
) -> str:
    """Why no honest response fits (ids, kwargs) within ``word_budget`` words (None: no cap),
    or why the empty response would satisfy it; "" when the set is fine."""
    empty = score_ifeval("", ids, kwargs, prompt)
    if empty.reason == "ok":
        return "the empty response satisfies every constraint"
    need = words_needed(ids, kwargs)
    if word_budget is not None and need > word_budget:
        return f"needs about {need} words; the cap allows {word_budget}"
    forced = " ".join(_forced_text(ids, kwargs))
    for kind, kw in zip(ids, kwargs, strict=True):
        relation = kw.get("relation") or kw.get("let_relation") or kw.get("capital_relation")
        if kind in _SHRINKING or relation == "less than":
            if kind == "length_constraints:number_words":
                limit, least = kw["num_words"], need
            elif kind == "length_constraints:number_sentences":
                limit, least = kw["num_sentences"], 1 + count_sentences(forced)
            else:  # counts of letters, capitals, a keyword; commas; forbidden words
                if not score_ifeval(forced, [kind], [kw]).details["results"][0]["ok"]:
                    return f"{kind}: the text other constraints force in breaks it"
                continue
            if least >= limit:
                return f"{kind}: fewer than {limit} is impossible (needs {least})"
            if word_budget is not None and limit > word_budget:
                return f"{kind}: fewer than {limit} always holds under the cap ({word_budget})"
    return ""


def compatible(kinds: Sequence[str]) -> bool:
    """Whether no two of ``kinds`` conflict."""
    return not any(frozenset((a, b)) in CONFLICTS for a in kinds for b in kinds if a != b)


class IFEvalGenTask:
    """Procedural IFEval-style prompts; see the module docstring for the split scheme."""

    domain = "instruction_following"

    def __init__(
        self,
        *,
        seed: int = 0,
        min_constraints: int = 1,
        max_constraints: int = 3,
        kinds: Sequence[str] | str | None = None,
        val_size: int = 200,
        test_size: int = 200,
        max_response_tokens: int | None = None,
    ) -> None:
        if isinstance(kinds, str):  # from the CLI: "punctuation:no_comma,startend:end_checker"
            kinds = [k.strip() for k in kinds.split(",") if k.strip()]
        chosen = tuple(kinds) if kinds else INSTRUCTION_IDS
        unknown = [k for k in chosen if k not in SAMPLERS]
        if unknown:
            raise ValueError(f"ifeval-gen: unknown kinds {unknown}; known: {list(SAMPLERS)}")
        if not 1 <= min_constraints <= max_constraints:
            raise ValueError("ifeval-gen: need 1 <= min_constraints <= max_constraints")
        if val_size < 0 or test_size < 0:
            raise ValueError("ifeval-gen: val_size and test_size must be >= 0")
        if max_response_tokens is not None and max_response_tokens < MIN_RESPONSE_TOKENS:
            raise ValueError(
                f"ifeval-gen: max_response_tokens must be >= {MIN_RESPONSE_TOKENS} (or None)"
            )
        if set(chosen) <= set(_SHRINKING):
            raise ValueError(
                f"ifeval-gen: kinds {sorted(set(chosen))} are all met by the empty response; "
                "add a kind that asks for something"
            )
        self.name = "ifeval-gen"
        self.seed = seed
        self.kinds = tuple(sorted(set(chosen)))
        self.min_constraints = min_constraints
        self.max_constraints = max_constraints
        self.max_response_tokens = max_response_tokens
        # Words a response cut at the cap surely has room for (None: no cap).
        self.word_budget = (
            None if max_response_tokens is None else int(max_response_tokens * WORDS_PER_TOKEN)
        )
        self._sizes: dict[str, int | None] = {"train": None, "val": val_size, "test": test_size}

    def size(self, split: str = "train") -> int | None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self._sizes[split]

    def _draw(self, rng: random.Random) -> tuple[int, list[str], list[dict[str, Any]]]:
        topic = rng.randrange(len(TOPICS))
        want = rng.randint(self.min_constraints, self.max_constraints)
        ids: list[str] = []
        for kind in rng.sample(self.kinds, len(self.kinds)):
            if len(ids) == want:
                break
            if compatible([*ids, kind]):
                ids.append(kind)
        kwargs = [SAMPLERS[k](rng, TOPICS[topic][1]) for k in ids]
        if self.word_budget is not None:
            for kind, kw in zip(ids, kwargs, strict=True):
                fits = [n for n in _NUMBER_WORDS if n <= self.word_budget]
                if kind == "length_constraints:number_words" and fits:
                    kw["num_words"] = rng.choice(fits)  # a limit the cap lets a response reach
        return topic, ids, kwargs

    def example(self, index: int, split: str = "train") -> Example:
        size = self.size(split)
        if index < 0 or (size is not None and index >= size):
            raise IndexError(f"{self.name} {split} has {size} items; got index {index}")
        for attempt in range(_MAX_ATTEMPTS):
            rng = random.Random(f"ifeval-gen:{self.seed}:{split}:{index}:{attempt}")
            topic, ids, kwargs = self._draw(rng)
            if _bucket(topic, ids, kwargs) in _SPLIT_BUCKETS[split]:
                ex = self._build(index, split, rng, topic, ids, kwargs)
                ids, kwargs = ex.meta["instruction_id_list"], ex.meta["kwargs"]
                if not infeasible(ids, kwargs, ex.question, self.word_budget):
                    return ex
        raise ValueError(
            f"{self.name}: no {split} prompt found in {_MAX_ATTEMPTS} draws; the kinds "
            f"{list(self.kinds)} leave too few distinct prompts that fit "
            f"max_response_tokens={self.max_response_tokens} and that the empty response fails"
        )

    def _build(
        self,
        index: int,
        split: str,
        rng: random.Random,
        topic: int,
        ids: list[str],
        kwargs: list[dict[str, Any]],
    ) -> Example:
        # repeat_prompt goes last, so the text to repeat is everything said before it.
        order = sorted(range(len(ids)), key=lambda i: ids[i] == "combination:repeat_prompt")
        ids = [ids[i] for i in order]
        kwargs = [kwargs[i] for i in order]
        parts = [f"Write {TOPICS[topic][0]}."]
        for kind, kw in zip(ids, kwargs, strict=True):
            if kind == "combination:repeat_prompt":
                kw["prompt_to_repeat"] = "\n".join(parts)
            parts.append(_render(kind, kw, rng))
        # One instruction per line: several end in a marker ("******", "P.S.") that would
        # run into the next sentence on a single line.
        text = "\n".join(parts)
        validate_spec(ids, kwargs, text)  # a generator bug must fail here, not in training
        spec = {
            "instruction_id_list": ids,
            "kwargs": kwargs,
            "content_gate": CONTENT_GATE.as_spec(),
        }
        return Example(
            uid=f"{self.name}:{split}:{self.seed}:{index}",
            task=self.name,
            prompt=({"role": "user", "content": text},),
            answer=json.dumps(spec),
            meta={**spec, "split": split, "topic": TOPICS[topic][0]},
        )

    def score(self, response: str, example: Example) -> Score:
        """Share of the constraints met, 0 unless the content gate passes (the spec's
        ``content_gate``; items built before it existed get ``CONTENT_GATE``)."""
        if "content_gate" not in example.meta and "instruction_id_list" in example.meta:
            example = replace(
                example, meta={**example.meta, "content_gate": CONTENT_GATE.as_spec()}
            )
        return as_score(score_ifeval_example(response, example))

    def format_answer(self, content: str) -> str:
        return content  # no answer format: the whole response is the answer

    def reference_response(self, example: Example) -> str | None:
        return None  # many responses satisfy a constraint set; none is the reference


def _bucket(topic: int, ids: list[str], kwargs: list[dict[str, Any]]) -> int:
    """0..99 from the prompt's content only, so equal content always lands in one split."""
    pairs = sorted(zip(ids, [json.dumps(k, sort_keys=True) for k in kwargs], strict=True))
    key = json.dumps([topic, pairs])
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100


@register_task(
    "ifeval-gen",
    domain="instruction_following",
    description="IFEval-style writing prompts with 1-3 verifiable constraints, generated offline",
    verifier="ifeval: share of the prompt's constraints satisfied (after </think>); 0 without "
    "a few words of the response's own or when mostly copied from the prompt",
)
def make_ifeval_gen_task(**settings: Any) -> IFEvalGenTask:
    return IFEvalGenTask(**settings)
