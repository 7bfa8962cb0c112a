"""STEM verifiers: ``stem_mc`` (multiple choice, GPQA style) and ``stem`` (short answer).

``stem_mc``: the reference is a letter A-J. The response's choice is the *last* of
``\\boxed{C}``, ``Answer: C``, ``The answer is (C)``, ``(C)``, or a response that is just
``C``; reason ``format`` (``formatted=False``) when none is found. Lower-case letters count
only inside a box or after "answer" with a colon or parentheses ("the answer is a number"
must not read as "A").

``stem``: a numeric or symbolic short answer given as ``\\boxed{...}`` (the final run of
boxes, as in the ``math`` verifier) or ``Answer: ...``, compared with the math checker; a
number followed by units ("9.8 m/s^2") is compared by its number when the reference is a bare
number. ``example.meta["rel_tol"]`` (default 0) also accepts numbers within that relative
tolerance, for measured quantities.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from prorl.types import Example, Score
from prorl.verify.math import _iter_boxed, answer_region, extract_answer, is_equivalent
from prorl.verify.registry import register_verifier

__all__ = ["extract_choice", "extract_short_answer", "score_mc", "score_short_answer"]

LETTERS = "ABCDEFGHIJ"
_L = "[A-J]"
# Each pattern's group 1 is the letter; position decides which is last.
_MC_PATTERNS = (
    # "Answer: C", "**Answer:** (C)", "The answer is $C$", "the correct option is: C."
    re.compile(
        r"(?i:answer|option|choice)\s*(?:is|:)\s*:?\s*[*_$]*\s*\(?\s*(" + _L + r")\s*\)?(?!\w)"
    ),
    re.compile(r"(?i:answer\s*:)\s*[*_$]*\s*\(?([a-j])\)?(?!\w)"),  # "answer: c"
    re.compile(r"\((" + _L + r")\)"),  # "(C)"
)
_TEXT_WRAP = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\{(.*)\}$")
_ANSWER_LINE = re.compile(r"(?i:answer)\s*(?:is)?\s*:?\s*(.+)")
# A number, optionally a separator and something that reads as units (no operators): "9.8 m/s^2",
# "3\\times 10^{8}\\,\\text{m/s}", "25 °C". "5x" or "5 + x" do not match.
_NUM_UNITS = re.compile(
    r"\s*([-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:\s*(?:[eE]|\\times\s*10\^|\*\s*10\*\*)\s*\{?[-+]?\d+\}?)?)"
    r"(?:(?:\s+|\\[,;! ]|~|(?=[°%Ω]|\\text\{|\\mathrm\{))(?:\\text\{|\\mathrm\{)?\s*"
    r"[a-zA-Zμ°Ω%][\w°Ω%μ/^{}\\\s.·*-]*)?\s*"
)


def _letter_in_box(content: str) -> str | None:
    text = content.strip().strip("()").strip()
    while (m := _TEXT_WRAP.match(text)) is not None:
        text = m.group(1).strip().strip("()").strip()
    return text.upper() if len(text) == 1 and text.upper() in LETTERS else None


def _candidates(text: str) -> Iterator[tuple[int, str]]:
    for end, content in _iter_boxed(text):
        letter = _letter_in_box(content)
        if letter is not None:
            yield end, letter
    for pattern in _MC_PATTERNS:
        for m in pattern.finditer(text):
            yield m.end(), m.group(1).upper()


def extract_choice(response: str) -> str | None:
    """The last letter choice A-J in the response (after any ``</think>``), or None."""
    text = answer_region(response)
    bare = text.strip().strip("*").rstrip(".").strip("()")
    if len(bare) == 1 and bare.upper() in LETTERS:
        return bare.upper()
    found = sorted(_candidates(text), key=lambda c: c[0])
    return found[-1][1] if found else None


def score_mc(response: str, reference: str) -> Score:
    choice = extract_choice(response)
    if choice is None:
        return Score(0.0, "format", formatted=False)
    ok = choice == reference.strip().strip("()").upper()
    return Score(1.0 if ok else 0.0, "ok" if ok else "wrong", {"extracted": choice}, True)


def extract_short_answer(response: str) -> str | None:
    """The final boxed answer (``prorl.verify.math.extract_answer``), else what follows the
    last "Answer:"/"answer is"; None when there is neither (or the box is empty)."""
    boxed = extract_answer(response)
    if boxed is not None:
        return boxed or None
    text = answer_region(response)
    lines = _ANSWER_LINE.findall(text)
    if not lines:
        return None
    answer = lines[-1].strip().strip("*").strip()
    if answer.startswith("$") and answer.count("$") >= 2:
        answer = answer[1 : answer.index("$", 1)]
    return answer.rstrip(".").strip() or None


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _leading_number(text: str) -> float | None:
    """The number in "9.8 m/s^2" / "3.0\\times 10^{8}\\text{ m/s}" / "6.02e23"; None when
    anything but units follows the number."""
    m = _NUM_UNITS.fullmatch(text)
    if m is None:
        return None
    raw = re.sub(r"\s|\{|\}", "", m.group(1))
    raw = re.sub(r"\\times10\^|\*10\*\*", "e", raw)
    return _number(raw)


def score_short_answer(response: str, reference: str, rel_tol: float = 0.0) -> Score:
    answer = extract_short_answer(response)
    if answer is None:
        return Score(0.0, "format", formatted=False)
    details = {"extracted": answer[:100]}
    if is_equivalent(answer, reference):
        return Score(1.0, "ok", details, formatted=True)
    ref_num = _number(reference.strip())
    if ref_num is not None:
        got = _leading_number(answer)
        if got is not None and math.isclose(got, ref_num, rel_tol=rel_tol, abs_tol=1e-12):
            return Score(1.0, "ok", details, formatted=True)
    return Score(0.0, "wrong", details, formatted=True)


@register_verifier("stem_mc")
def stem_mc_verifier(response: str, example: Example) -> Score:
    return score_mc(response, example.answer)


@register_verifier("stem")
def stem_verifier(response: str, example: Example) -> Score:
    rel_tol = float(example.meta.get("rel_tol", 0.0) or 0.0)
    return score_short_answer(response, example.answer, rel_tol)
