"""The ``math`` verifier: the final ``\\boxed{}`` answer, checked symbolically with math-verify.

Reward 1 when the boxed answer is equivalent to the reference (fractions vs decimals,
``\\dfrac``, intervals, sets, thousands separators, units in ``\\text{}``, percentages and
degrees), else 0; reason ``format`` (and ``formatted=False``) when the response has no
non-empty boxed answer.

Several boxes. The answer is the *last run* of boxes: the last box together with the boxes
before it that are joined to it by separators only (commas, semicolons, "and", "or", math
delimiters, line breaks, a ``x =`` before a box), as math-verify joins them. A run of several
different boxes is one answer, the set of their contents: ``x = \\boxed{2}`` and
``x = \\boxed{-3}`` answers ``2, -3``, ``\\boxed{(2, 1)}, \\boxed{(1, 2)}`` answers
``(2,1),(1,2)``, and a hedge such as ``\\boxed{1}, \\boxed{2}, \\boxed{3}`` is wrong when only
one of them is right. A box followed by any other words starts over, so a self-correction
(``\\boxed{5} no: \\boxed{3}``) is answered by its last box.

math-verify's own timeout uses ``signal.alarm``: it raises outside the main thread and cannot
interrupt C code. We call it with that timeout disabled; the hard deadline lives in one place,
the process pool (``prorl.scoring.pool``). Cheap guards below reject answers no reference
could equal (megabyte answers, absurd nesting) before sympy ever sees them.
"""

from __future__ import annotations

import logging
import re
import warnings
from functools import lru_cache
from typing import Any

from prorl.types import Example, Score
from prorl.verify.registry import register_verifier

__all__ = ["extract_answer", "extract_boxed", "is_equivalent", "score_math"]

# An answer longer than this (and much longer than the reference) is never equivalent in
# practice, and parsing it can take minutes: reject it without parsing.
MAX_ANSWER_CHARS = 1000
# Real answers nest brackets a handful of levels deep; 10k-deep nesting is an attack on the
# parser's recursion.
MAX_NESTING = 30

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_TOKEN_RE = re.compile(r"[ \t]+([^\s$]+)")
# What may stand between two boxes of one answer (see the module docstring): whitespace,
# , ; & ~, math delimiters ($ \( \) \[ \] \\), spacing commands, "and"/"or" (plain or in
# \text{}), and a variable being assigned ("x =", "x_2 =", "y_{1} =").
_SEPARATORS = re.compile(
    r"(?:\s|[,;&~$]|\\[()\[\]\\,;:! ]|\\q?quad(?![A-Za-z])"
    r"|\\(?:text|mathrm|textrm)\{\s*(?:and|or|,)?\s*\}|(?<![A-Za-z])(?:and|or)(?![A-Za-z])"
    r"|(?<![A-Za-z\\])[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=(?=\s*$))*",
)
# Two boxes further apart than this are never one answer (math-verify uses 70).
MAX_SEPARATOR_CHARS = 60


def _matching_brace(text: str, open_at: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_at``; escaped braces do not count.
    Iterative, so 10k-deep nesting costs O(n) and no recursion."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _iter_boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every top-level ``\\boxed``/``\\fbox``, left to right."""
    found: list[tuple[int, int, str]] = []
    pos = 0
    while (m := _BOX_RE.search(text, pos)) is not None:
        j = m.end()
        k = j
        while k < len(text) and text[k] in " \t":
            k += 1
        if k < len(text) and text[k] == "{":
            close = _matching_brace(text, k)
            if close is None:  # unbalanced: nothing usable from here on
                pos = j
                continue
            found.append((m.start(), close + 1, text[k + 1 : close]))
            pos = close + 1
            continue
        bare = _BARE_TOKEN_RE.match(text, j)  # ``\boxed 5``
        if bare is not None:
            token = bare.group(1).rstrip(".,;")
            found.append((m.start(), bare.start(1) + len(token), token))
            pos = bare.end()
        else:
            pos = j
    return found


def _iter_boxed(text: str) -> list[tuple[int, str]]:
    """(end position, content) of every top-level ``\\boxed``/``\\fbox``, left to right."""
    return [(end, content) for _, end, content in _iter_boxes(text)]


def _unwrap(content: str) -> str:
    """``\\boxed{\\boxed{5}}`` -> ``5``."""
    content = content.strip()
    while True:
        inner = _iter_boxed(content)
        m = _BOX_RE.match(content)
        if m is None or len(inner) != 1 or inner[0][0] != len(content):
            return content
        content = inner[0][1].strip()


def answer_region(response: str) -> str:
    """The part of a response that may hold the final answer: text after any ``</think>``."""
    return response.rsplit("</think>", 1)[-1]


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x`` after any
    ``</think>``, with nested braces kept; None when there is none."""
    found = _iter_boxed(answer_region(text))
    return _unwrap(found[-1][1]) if found else None


def _joined(between: str) -> bool:
    """True when ``between`` (the text from one box's end to the next box's start) holds
    separators only, so that the two boxes belong to one answer."""
    return len(between) <= MAX_SEPARATOR_CHARS and _SEPARATORS.fullmatch(between) is not None


def extract_answer(text: str) -> str | None:
    """The final answer after any ``</think>``: the content of the last box, or, where
    boxes joined by separators only end the response's boxes, their distinct non-empty
    contents joined by ", " (a set for the checker); None when there is no box."""
    region = answer_region(text)
    boxes = _iter_boxes(region)
    if not boxes:
        return None
    first = len(boxes) - 1
    while first > 0 and _joined(region[boxes[first - 1][1] : boxes[first][0]]):
        first -= 1
    contents: list[str] = []
    for _, _, content in boxes[first:]:
        item = _unwrap(content)
        if item and item not in contents:
            contents.append(item)
    return ", ".join(contents)


def _max_nesting(text: str) -> int:
    depth = best = 0
    for ch in text:
        if ch in "({[":
            depth += 1
            best = max(best, depth)
        elif ch in ")}]":
            depth = max(0, depth - 1)
    return best


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    # Imported lazily: sympy and the LaTeX grammar cost ~0.5 s, and `prorl tasks` or an
    # import of prorl.verify should not pay it. The library warns once that its timeout is
    # disabled (we know: the pool enforces it); verifiers must be silent.
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    return math_verify


def _parse(latex: str) -> list[Any]:
    mv = _math_verify()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(mv.parse("\\boxed{" + latex + "}", parsing_timeout=None))


@lru_cache(maxsize=4096)
def _parse_reference(reference: str) -> tuple[Any, ...]:
    # A group of G responses shares one reference: parse it once per worker.
    return tuple(_parse(reference))


def _norm(text: str) -> str:
    return re.sub(r"\s+|\\[,!;: ]|\$", "", text).strip().lower()


def is_equivalent(answer: str, reference: str) -> bool:
    """True when ``answer`` is mathematically equal to ``reference`` (both LaTeX or plain).

    Never raises; no timeout of its own (run it under ``VerifierPool``)."""
    answer = answer.strip()
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1]  # a sentence's full stop inside the box: "\\boxed{10.}"
    if not answer:
        return False
    if len(answer) > max(MAX_ANSWER_CHARS, 4 * len(reference)):
        return False
    if _max_nesting(answer) > max(MAX_NESTING, _max_nesting(reference)):
        return False
    if _norm(answer) == _norm(reference):
        return True
    try:
        gold = list(_parse_reference(reference))
        target = _parse(answer)
        if not gold or not target:
            return False
        mv = _math_verify()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(mv.verify(gold, target, timeout_seconds=None))
    except (RecursionError, MemoryError, ValueError, TypeError, ArithmeticError):
        return False
    except Exception:  # sympy raises a zoo of types on odd input; model output never crashes us
        return False


def score_math(response: str, reference: str) -> Score:
    """1 if the final boxed answer (``extract_answer``) equals ``reference``; 0 with reason
    ``format`` if there is no boxed answer or only an empty one, ``wrong`` otherwise.
    ``details["extracted"]`` holds (a prefix of) the answer."""
    answer = extract_answer(response)
    if not answer or not answer.strip():
        return Score(0.0, "format", formatted=False)
    ok = is_equivalent(answer, reference)
    details = {"extracted": answer[:100]}
    return Score(1.0 if ok else 0.0, "ok" if ok else "wrong", details, formatted=True)


@register_verifier("math")
def math_verifier(response: str, example: Example) -> Score:
    return score_math(response, example.answer)
