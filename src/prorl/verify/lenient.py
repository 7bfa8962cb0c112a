"""Lenient extraction: is the last number anywhere in a response the reference answer?

A task's score reads the answer where the task asked for it (``<answer>`` tags, ``\\boxed{}``).
A model that has not learned that format scores 0 whatever it knows, so a rise in the
strict success rate can be format learning alone. Reading the last number of the response
instead (for references that are numbers) measures the arithmetic without the format: if
training raised the strict score above what the base already got right under this lenient
reading, the model learned more than the format. Reports use it beside the score; a task
may also choose it as its answer format (``rg/<dataset>`` with ``answer: last_number``),
where numbers copied from the prompt do not count (``strip_prompt``).
"""

from __future__ import annotations

import re
from fractions import Fraction

# integers, decimals and fractions, with optional thousands separators: -12, 3.5, 1,024, 7/2
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?")


def as_number(text: str) -> Fraction | None:
    """``text`` as an exact number, or None when it is not one (``"7/2"`` -> 7/2)."""
    try:
        value = Fraction(text.strip().replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None
    return value


def lenient_correct(response: str, reference: str) -> bool | None:
    """Whether the last number in ``response`` (after any ``</think>``) equals the numeric
    ``reference``; None when the reference is not a number (lenient reading undefined)."""
    ref = as_number(reference)
    if ref is None:
        return None
    return last_number(response) == ref


def last_number(text: str) -> Fraction | None:
    """The last number in ``text`` after any ``</think>``, or None when there is none."""
    found = _NUMBER.findall(text.rsplit("</think>", 1)[-1])
    return as_number(found[-1]) if found else None


def strip_prompt(response: str, prompt: str) -> str:
    """``response`` without verbatim copies of ``prompt``: an echoed question's numbers are
    the question's, not an answer."""
    return response.replace(prompt, " ") if prompt.strip() else response
