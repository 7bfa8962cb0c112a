"""IFEval's 25 instruction kinds: one check function each, plus kwargs validation.

A check takes ``(text, kwargs, prompt)`` with ``text`` already stripped of reasoning and
``kwargs`` already normalised by :func:`normalize_kwargs`; it returns a bool. Semantics follow
IFEval (Zhou et al., 2023); where they differ on purpose, docs/ifeval.md says how and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prorl.verify.ifeval_text import (
    RELATIONS,
    blank_line_paragraphs,
    compare,
    count_sentences,
    count_words,
    detect_language,
    first_word,
    supported_languages,
)

Kwargs = Mapping[str, Any]
CheckFn = Callable[[str, Kwargs, str], bool]

CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
_INT_KEYS = frozenset(
    "frequency let_frequency num_sentences num_paragraphs num_words nth_paragraph "  # noqa: SIM905
    "num_placeholders num_bullets num_highlights num_sections capital_frequency".split()
)
_LIST_KEYS = frozenset({"keywords", "forbidden_words"})
_RELATION_KEYS = frozenset({"relation", "let_relation", "capital_relation"})
_STR_KEYS = frozenset(
    "keyword letter language first_word postscript_marker section_spliter end_phrase "  # noqa: SIM905
    "prompt_to_repeat".split()
)
KNOWN_KWARGS = _INT_KEYS | _LIST_KEYS | _RELATION_KEYS | _STR_KEYS


@dataclass(frozen=True)
class Instruction:
    check: CheckFn
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


def _word_re(phrase: str) -> re.Pattern[str]:
    """Case-insensitive whole-word match ("cat" does not match "education")."""
    return re.compile(r"(?<!\w)" + re.escape(phrase.strip()) + r"(?!\w)", re.IGNORECASE)


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


# --- keywords ---------------------------------------------------------------------------
def _existence(text: str, kw: Kwargs, _: str) -> bool:
    return all(_word_re(k).search(text) for k in kw["keywords"])


def _frequency(text: str, kw: Kwargs, _: str) -> bool:
    n = len(_word_re(kw["keyword"]).findall(text))
    return compare(n, kw["relation"], kw["frequency"])


def _forbidden(text: str, kw: Kwargs, _: str) -> bool:
    return not any(_word_re(w).search(text) for w in kw["forbidden_words"])


def _letter_frequency(text: str, kw: Kwargs, _: str) -> bool:
    n = text.lower().count(kw["letter"])
    return compare(n, kw["let_relation"], kw["let_frequency"])


# --- language and case ------------------------------------------------------------------
def _language(text: str, kw: Kwargs, _: str) -> bool:
    return detect_language(text) == kw["language"].lower().split("-")[0]


def _english_capital(text: str, kw: Kwargs, _: str) -> bool:
    # langdetect is trained on mixed-case text; lowercase before asking it.
    return text.isupper() and detect_language(text.lower()) == "en"


def _english_lowercase(text: str, kw: Kwargs, _: str) -> bool:
    return text.islower() and detect_language(text) == "en"


def _capital_words(text: str, kw: Kwargs, _: str) -> bool:
    # Single letters ("I", "A") are capitals in ordinary English, not emphasis.
    caps = [w for w in re.findall(r"[^\W\d_]+", text) if len(w) > 1 and w.isupper()]
    return compare(len(caps), kw["capital_relation"], kw["capital_frequency"])


# --- length -----------------------------------------------------------------------------
def _sentences(text: str, kw: Kwargs, _: str) -> bool:
    return compare(count_sentences(text), kw["relation"], kw["num_sentences"])


def _words(text: str, kw: Kwargs, _: str) -> bool:
    return compare(count_words(text), kw["relation"], kw["num_words"])


_DIVIDER_RE = re.compile(r"(?<!\S)\*\*\*(?!\S)")


def _paragraphs(text: str, kw: Kwargs, _: str) -> bool:
    parts = [p.strip() for p in _DIVIDER_RE.split(text)]
    # A divider before the first or after the last paragraph is tolerated; an empty
    # paragraph between two dividers is not.
    while parts and not parts[0]:
        parts.pop(0)
    while parts and not parts[-1]:
        parts.pop()
    if not parts or any(not p for p in parts):
        return False
    return len(parts) == kw["num_paragraphs"]


def _nth_first_word(text: str, kw: Kwargs, _: str) -> bool:
    paragraphs = blank_line_paragraphs(text)
    nth = kw["nth_paragraph"]
    if len(paragraphs) != kw["num_paragraphs"] or nth > len(paragraphs):
        return False
    return first_word(paragraphs[nth - 1]) == kw["first_word"].strip().lower()


# --- detectable content and format ------------------------------------------------------
def _placeholders(text: str, kw: Kwargs, _: str) -> bool:
    found = [m for m in re.findall(r"\[([^\[\]\n]*)\]", text) if m.strip()]
    return len(found) >= kw["num_placeholders"]


def _postscript(text: str, kw: Kwargs, _: str) -> bool:
    # "P.S." also matches "P. S." and "p.s."; the marker must open a line (after optional
    # markdown emphasis) and be followed by some actual content.
    marker = kw["postscript_marker"].strip()
    body = "".join(r"\.\s?" if c == "." else re.escape(c) for c in marker)
    # Content may start on the marker's line or the next one; looking no further keeps the
    # search linear when many lines open with the marker.
    pattern = r"^[ \t>*_#]*" + body + r"[^\w\n]*(?:\n[^\w\n]*)?[^\W_]"
    return re.search(pattern, text, re.IGNORECASE | re.MULTILINE) is not None


def _bullets(text: str, kw: Kwargs, _: str) -> bool:
    n = len(re.findall(r"^[ \t]*[*-][ \t]+\S", text, re.MULTILINE))
    return n == kw["num_bullets"]


def _constrained(text: str, kw: Kwargs, _: str) -> bool:
    # Exactly one option: listing all three options is not choosing one.
    return sum(option in text for option in CONSTRAINED_OPTIONS) == 1


# Markdown emphasis: *text* or **text** on one line, no space just inside the asterisks
# (so a "* item" bullet does not open a highlight).
_HIGHLIGHT_RE = re.compile(r"\*\*(?=[^\s*])[^\n*]*(?<=[^\s*])\*\*|\*(?=[^\s*])[^\n*]*(?<=[^\s*])\*")


def _highlights(text: str, kw: Kwargs, _: str) -> bool:
    spans = [s for s in _HIGHLIGHT_RE.findall(text) if s.strip("*").strip()]
    return len(spans) >= kw["num_highlights"]


def _sections(text: str, kw: Kwargs, _: str) -> bool:
    marker = re.escape(kw["section_spliter"].strip())
    n = len(re.findall(r"(?<!\w)" + marker + r"[ \t]*\d+", text))
    return n >= kw["num_sections"]


def _json(text: str, kw: Kwargs, _: str) -> bool:
    body = text.strip()
    body = re.sub(r"^```(?:json)?[ \t]*\n?", "", body, flags=re.IGNORECASE)
    body = re.sub(r"\n?```$", "", body).strip()
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return False
    # A bare number or string is valid JSON but not a response "wrapped in JSON".
    return isinstance(value, dict | list)


def _title(text: str, kw: Kwargs, _: str) -> bool:
    return any(t.strip() for t in re.findall(r"<<([^\n<>]+)>>", text))


# --- combinations, start/end, punctuation -----------------------------------------------
def _two_responses(text: str, kw: Kwargs, _: str) -> bool:
    parts = [p.strip() for p in re.split(r"(?<!\*)\*{6}(?!\*)", text)]
    while parts and not parts[0]:
        parts.pop(0)
    while parts and not parts[-1]:
        parts.pop()
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


def _repeat_prompt(text: str, kw: Kwargs, prompt: str) -> bool:
    target = _squash(kw.get("prompt_to_repeat") or prompt)
    return bool(target) and _squash(text).startswith(target)


def _end_checker(text: str, kw: Kwargs, _: str) -> bool:
    return _squash(text).endswith(_squash(kw["end_phrase"]))


def _no_comma(text: str, kw: Kwargs, _: str) -> bool:
    return not any(c in text for c in ",\uff0c\u060c")


def _quotation(text: str, kw: Kwargs, _: str) -> bool:
    body = text.strip()
    return len(body) >= 2 and body[0] in '"\u201c' and body[-1] in '"\u201d'


INSTRUCTIONS: dict[str, Instruction] = {
    "keywords:existence": Instruction(_existence, ("keywords",)),
    "keywords:frequency": Instruction(_frequency, ("keyword", "frequency", "relation")),
    "keywords:forbidden_words": Instruction(_forbidden, ("forbidden_words",)),
    "keywords:letter_frequency": Instruction(
        _letter_frequency, ("letter", "let_frequency", "let_relation")
    ),
    "language:response_language": Instruction(_language, ("language",)),
    "length_constraints:number_sentences": Instruction(_sentences, ("num_sentences", "relation")),
    "length_constraints:number_paragraphs": Instruction(_paragraphs, ("num_paragraphs",)),
    "length_constraints:number_words": Instruction(_words, ("num_words", "relation")),
    "length_constraints:nth_paragraph_first_word": Instruction(
        _nth_first_word, ("num_paragraphs", "nth_paragraph", "first_word")
    ),
    "detectable_content:number_placeholders": Instruction(_placeholders, ("num_placeholders",)),
    "detectable_content:postscript": Instruction(_postscript, ("postscript_marker",)),
    "detectable_format:number_bullet_lists": Instruction(_bullets, ("num_bullets",)),
    "detectable_format:constrained_response": Instruction(_constrained),
    "detectable_format:number_highlighted_sections": Instruction(_highlights, ("num_highlights",)),
    "detectable_format:multiple_sections": Instruction(
        _sections, ("section_spliter", "num_sections")
    ),
    "detectable_format:json_format": Instruction(_json),
    "detectable_format:title": Instruction(_title),
    "combination:two_responses": Instruction(_two_responses),
    "combination:repeat_prompt": Instruction(_repeat_prompt, (), ("prompt_to_repeat",)),
    "startend:end_checker": Instruction(_end_checker, ("end_phrase",)),
    "change_case:capital_word_frequency": Instruction(
        _capital_words, ("capital_frequency", "capital_relation")
    ),
    "change_case:english_capital": Instruction(_english_capital),
    "change_case:english_lowercase": Instruction(_english_lowercase),
    "punctuation:no_comma": Instruction(_no_comma),
    "startend:quotation": Instruction(_quotation),
}


def _normalize_value(where: str, key: str, value: Any) -> Any:
    if key in _INT_KEYS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: {key} must be a non-negative integer, got {value!r}")
        return value
    if key in _RELATION_KEYS:
        if value not in RELATIONS:
            raise ValueError(f"{where}: {key} must be one of {RELATIONS}, got {value!r}")
        return value
    if key in _LIST_KEYS:
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{where}: {key} must be a non-empty list of strings")
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"{where}: {key} must contain only non-empty strings")
        return [v.strip() for v in value]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def normalize_kwargs(instruction_id: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated kwargs for ``instruction_id``; raises ValueError naming the problem.

    Keys whose value is None are dropped first (the Hugging Face copy of IFEval stores every
    key in every dict, unused ones as null).
    """
    if instruction_id not in INSTRUCTIONS:
        raise ValueError(
            f"unknown IFEval instruction id {instruction_id!r}; known: "
            + ", ".join(sorted(INSTRUCTIONS))
        )
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"{instruction_id}: kwargs must be a dict, got {type(kwargs).__name__}")
    spec = INSTRUCTIONS[instruction_id]
    given = {k: v for k, v in (kwargs or {}).items() if v is not None}
    allowed = set(spec.required) | set(spec.optional)
    extra = sorted(set(given) - allowed)
    if extra:
        raise ValueError(f"{instruction_id}: unexpected kwargs {extra}; allowed: {sorted(allowed)}")
    missing = [k for k in spec.required if k not in given]
    if missing:
        raise ValueError(f"{instruction_id}: missing kwargs {missing}")
    out = {k: _normalize_value(instruction_id, k, v) for k, v in given.items()}
    if "letter" in out:
        letter = out["letter"].strip().lower()
        if len(letter) != 1 or not letter.isalpha():
            raise ValueError(f"{instruction_id}: letter must be one letter, got {out['letter']!r}")
        out["letter"] = letter
    if "language" in out and out["language"].lower() not in supported_languages():
        raise ValueError(
            f"{instruction_id}: language {out['language']!r} is not an ISO code langdetect knows"
        )
    if "nth_paragraph" in out and not 1 <= out["nth_paragraph"] <= out["num_paragraphs"]:
        raise ValueError(f"{instruction_id}: nth_paragraph must be in 1..num_paragraphs")
    return out
