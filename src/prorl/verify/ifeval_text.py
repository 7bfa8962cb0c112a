"""Text measurements shared by the IFEval checks: words, sentences, paragraphs, language.

Every function here is total on arbitrary strings (model output): no exceptions, linear-time
regexes only. The counting rules are documented in docs/ifeval.md.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

THINK_END = "</think>"
RELATIONS = ("less than", "at least")

# A word is a whitespace-separated token that contains at least one letter or digit, so
# "don't", "3.5" and "well-known" are one word each and a lone "-" or "*" is none.
_ALNUM_RE = re.compile(r"[^\W_]")
# A sentence ends at ., ! or ? (possibly repeated, e.g. "?!" or "..."), optionally followed
# by closing quotes/brackets/emphasis, then whitespace. Blank lines also end a sentence.
# Matches start only at the beginning of a punctuation run and never backtrack, so a run
# of 100k dots costs linear time, not quadratic.
_SENT_END_RE = re.compile(
    r"(?<![.!?\u3002\uff01\uff1f])[.!?\u3002\uff01\uff1f]++[\"'\u201d\u2019)\]*_]*+(?=\s)"
)
_BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")
# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e eg ie no fig approx dept est inc ltd "  # noqa: SIM905
    "co mt ave jan feb mar apr jun jul aug sep sept oct nov dec a.m p.m u.s u.k".split()
)
# Characters before a period inspected for an abbreviation (longer tokens are not ones).
_WINDOW = 40
# langdetect gets slow and no more accurate on very long inputs.
_LANG_CHARS = 10_000


def strip_thinking(response: str) -> str:
    """The text after the last ``</think>``; the whole response when there is none."""
    return response.rsplit(THINK_END, 1)[-1]


def compare(count: int, relation: str, target: int) -> bool:
    """IFEval's two relations: ``"less than"`` (strict) and ``"at least"``."""
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def words(text: str) -> list[str]:
    # split() then a search per token: linear, unlike one regex with \S* around the letter,
    # which backtracks quadratically on long runs of punctuation.
    return [token for token in text.split() if _ALNUM_RE.search(token)]


def count_words(text: str) -> int:
    return len(words(text))


def _period_is_not_an_end(block: str, end: int) -> bool:
    """Whether the "." just before ``end`` belongs to an abbreviation, an initial or a list
    enumerator. Looks only at a short window so a long run of "a. a. a." stays linear."""
    lo = max(0, end - _WINDOW)
    tokens = block[lo:end].split()
    if not tokens:
        return False
    token = tokens[-1]
    last = token.lstrip("(\"'\u201c").rstrip(".").lower()
    # Single letters are initials ("J. R. R. Tolkien"), not sentence ends.
    if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
        return True
    if not last.isdigit():
        return False
    # A number alone at the start of a line is a list enumerator ("2. Eat.").
    before = block[lo : end - len(token)].rstrip(" \t")
    return before.endswith("\n") or (not before and lo == 0)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: pieces ending at terminal punctuation or a blank line.

    Pieces without any letter or digit (dividers such as ``***``) are not sentences. A
    period after a known abbreviation or a single initial does not end a sentence.
    """
    sentences: list[str] = []
    for block in _BLANK_LINE_RE.split(text):
        start = 0
        for m in _SENT_END_RE.finditer(block):
            if m.group() == "." and _period_is_not_an_end(block, m.end()):
                continue
            sentences.append(block[start : m.end()].strip())
            start = m.end()
        sentences.append(block[start:].strip())
    return [s for s in sentences if _ALNUM_RE.search(s)]


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


def blank_line_paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs separated by one or more blank lines."""
    return [p.strip() for p in _BLANK_LINE_RE.split(text) if p.strip()]


def first_word(paragraph: str) -> str:
    """The first word, lowercased, without surrounding punctuation or markdown marks."""
    for token in paragraph.split():
        core = token.strip("\"'\u201c\u201d\u2018\u2019*_#>.,;:!?()[]{}-")
        if core:
            return core.lower()
    return ""


@lru_cache(maxsize=1)
def supported_languages() -> frozenset[str]:
    """ISO codes langdetect knows (its profile file names), plus bare ``zh``."""
    import langdetect

    profiles = os.path.join(os.path.dirname(langdetect.__file__), "profiles")
    codes = {name.lower() for name in os.listdir(profiles)}
    return frozenset(codes | {c.split("-")[0] for c in codes})


def detect_language(text: str) -> str | None:
    """langdetect's best guess (base code, e.g. ``zh`` for ``zh-cn``), None if it cannot tell.

    Deterministic: langdetect's sampler is seeded once. Only the first 10k characters are
    used so a megabyte of output costs no more than a long answer.
    """
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    try:
        return detect(text[:_LANG_CHARS]).split("-")[0].lower()
    except LangDetectException:
        return None


def norm_words(text: str) -> list[str]:
    """``words(text)`` lowercased, with leading/trailing punctuation and markdown stripped
    ("*Snow,*" -> "snow"), for comparing a response's wording with the prompt's."""
    out = []
    for token in words(text):
        first = _ALNUM_RE.search(token)
        last = _ALNUM_RE.search(token[::-1])
        if first and last:  # always true for a word; the check keeps mypy and linters happy
            out.append(token[first.start() : len(token) - last.start()].lower())
    return out
