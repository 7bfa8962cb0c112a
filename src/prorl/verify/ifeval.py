"""IFEval-style instruction-following verifier: reward = share of constraints satisfied.

The constraint spec uses IFEval's data format: ``instruction_id_list`` (e.g.
``"punctuation:no_comma"``) with a parallel ``kwargs`` list of dicts, so rows of the original
IFEval data (or its Hugging Face copy, whose kwargs dicts hold every key with nulls) work as
they are. Only the text after the last ``</think>`` is judged.

Bad specs (unknown id, missing or malformed kwargs) raise ``ValueError`` from
:func:`validate_spec`, which loaders call when they read data; the registered verifier never
raises: a bad spec found at scoring time is reported as INFRA_ERROR, and any failure while
checking model output counts as that constraint not being met.

**Content gate.** A spec may carry ``content_gate`` (``{"min_words": 5, "max_echo": 0.5}``;
``ifeval-gen`` always does, rows of IFEval's own data do not). Then the response must also be a
real attempt at the writing task: at least ``min_words`` words of its own (not copied from the
prompt) and at most ``max_echo`` of its words copied from the prompt, else the reward is 0
whatever the constraints say. The no-comma or word-limit constraints alone would otherwise pay
the empty response. See :func:`content_gate` and docs/ifeval.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prorl.types import Example, Score
from prorl.verify.ifeval_checks import CONSTRAINED_OPTIONS, INSTRUCTIONS, normalize_kwargs
from prorl.verify.ifeval_text import norm_words, strip_thinking
from prorl.verify.registry import register_verifier

__all__ = [
    "INSTRUCTION_IDS",
    "ContentGate",
    "check_instruction",
    "content_gate",
    "gate_from_example",
    "score_ifeval",
    "spec_from_example",
    "validate_spec",
]

INSTRUCTION_IDS: tuple[str, ...] = tuple(sorted(INSTRUCTIONS))
# Word n-grams shared with the prompt count as copied ("echo"); 3 keeps a restated topic
# ("the first snow of winter") from counting as the response's own words.
ECHO_NGRAM = 3


@dataclass(frozen=True)
class ContentGate:
    """The response must hold ``min_words`` words of its own (not in an ``ECHO_NGRAM``-gram of
    the prompt) and copy at most ``max_echo`` of its words from the prompt."""

    min_words: int = 5
    max_echo: float = 0.5

    @classmethod
    def from_spec(cls, value: Any) -> ContentGate:
        """From a spec's ``content_gate`` dict; ValueError naming the problem."""
        if not isinstance(value, Mapping):
            raise ValueError(f"content_gate must be a dict, got {type(value).__name__}")
        extra = sorted(set(value) - {"min_words", "max_echo"})
        if extra:
            raise ValueError(f"content_gate: unexpected keys {extra}")
        gate = cls(**value)
        if isinstance(gate.min_words, bool) or not isinstance(gate.min_words, int):
            raise ValueError(f"content_gate: min_words must be an int, got {gate.min_words!r}")
        if gate.min_words < 1:
            raise ValueError("content_gate: min_words must be >= 1")
        echo = gate.max_echo
        if isinstance(echo, bool) or not isinstance(echo, int | float) or not 0 <= echo <= 1:
            raise ValueError(f"content_gate: max_echo must be in [0, 1], got {echo!r}")
        return gate

    def as_spec(self) -> dict[str, Any]:
        return asdict(self)


def _spans(tokens: Sequence[str], phrase: Sequence[str]) -> list[int]:
    """Start indices of ``phrase`` in ``tokens`` (non-overlapping, left to right)."""
    out, i, n = [], 0, len(phrase)
    while n and i + n <= len(tokens):
        if tokens[i : i + n] == list(phrase):
            out.append(i)
            i += n
        else:
            i += 1
    return out


def content_gate(
    text: str,
    prompt: str,
    gate: ContentGate,
    *,
    required: Sequence[str] = (),
    repeated: str = "",
) -> dict[str, Any]:
    """Whether ``text`` (already stripped of reasoning) is a real attempt at ``prompt``.

    Words are compared lowercased without edge punctuation (:func:`norm_words`). A word is
    *copied* when it lies in a word ``ECHO_NGRAM``-gram that also occurs in the prompt, else
    it is the response's *own*. Text a constraint asks to copy is neither: a leading
    repetition of ``repeated`` (``repeat_prompt``) is dropped, and occurrences of the
    ``required`` phrases (an end phrase, the constrained-response options) are ignored.
    Passes when own >= ``min_words`` and copied / (own + copied) <= ``max_echo``.
    Returns ``{"ok", "own_words", "copied_words", "echo", "min_words", "max_echo"}``.
    """
    toks = norm_words(text)
    rep = norm_words(repeated)
    if rep and toks[: len(rep)] == rep:
        toks = toks[len(rep) :]
    neutral = [False] * len(toks)
    for phrase in required:
        ptoks = norm_words(phrase)
        for start in _spans(toks, ptoks):
            neutral[start : start + len(ptoks)] = [True] * len(ptoks)
    ptoks = norm_words(prompt)
    n = min(ECHO_NGRAM, len(ptoks))
    copied = [False] * len(toks)
    if n:
        grams = {tuple(ptoks[i : i + n]) for i in range(len(ptoks) - n + 1)}
        for i in range(len(toks) - n + 1):
            if tuple(toks[i : i + n]) in grams:
                copied[i : i + n] = [True] * n
    own = sum(not c and not z for c, z in zip(copied, neutral, strict=True))
    n_copied = sum(c and not z for c, z in zip(copied, neutral, strict=True))
    echo = n_copied / (own + n_copied) if own + n_copied else 1.0
    return {
        "ok": own >= gate.min_words and echo <= gate.max_echo,
        "own_words": own,
        "copied_words": n_copied,
        "echo": round(echo, 4),
        "min_words": gate.min_words,
        "max_echo": gate.max_echo,
    }


def _copied_by_request(
    instruction_ids: Sequence[str], norms: Sequence[Mapping[str, Any]], prompt: str
) -> tuple[list[str], str]:
    """(phrases the constraints ask to include verbatim, text asked to be repeated first)."""
    required: list[str] = []
    repeated = ""
    for iid, kw in zip(instruction_ids, norms, strict=True):
        if iid == "startend:end_checker":
            required.append(kw["end_phrase"])
        elif iid == "detectable_format:constrained_response":
            required.extend(CONSTRAINED_OPTIONS)
        elif iid == "combination:repeat_prompt":
            repeated = kw.get("prompt_to_repeat") or prompt
    return required, repeated


def validate_spec(
    instruction_ids: Sequence[str],
    kwargs: Sequence[Mapping[str, Any] | None] | None,
    prompt: str = "",
) -> list[dict[str, Any]]:
    """Check a constraint spec and return its normalised kwargs (one dict per id).

    Raises ValueError naming the problem: an unknown id, a kwargs list of the wrong length,
    a missing/unexpected/malformed kwarg, or ``repeat_prompt`` with nothing to repeat.
    ``kwargs=None`` means every instruction takes none.
    """
    if isinstance(instruction_ids, str) or not isinstance(instruction_ids, Sequence):
        raise ValueError("instruction_id_list must be a list of instruction ids")
    if not instruction_ids:
        raise ValueError("instruction_id_list is empty: an IFEval example needs a constraint")
    if kwargs is None:
        kwargs = [{} for _ in instruction_ids]
    if isinstance(kwargs, Mapping | str) or len(kwargs) != len(instruction_ids):
        raise ValueError(
            f"kwargs must be a list with one dict per instruction id ({len(instruction_ids)} ids)"
        )
    out = []
    for iid, kw in zip(instruction_ids, kwargs, strict=True):
        norm = normalize_kwargs(iid, kw)
        if iid == "combination:repeat_prompt" and not (norm.get("prompt_to_repeat") or prompt):
            raise ValueError(f"{iid}: needs prompt_to_repeat (or the prompt) to compare with")
        out.append(norm)
    return out


def spec_from_example(example: Example) -> tuple[list[str], list[Any]]:
    """The raw (ids, kwargs) of ``example``: from ``meta`` if it has ``instruction_id_list``,
    else from ``answer`` as JSON ``{"instruction_id_list": [...], "kwargs": [...]}``."""
    source: Any = example.meta
    if "instruction_id_list" not in source:
        try:
            source = json.loads(example.answer)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"example {example.uid}: no instruction_id_list in meta and answer is not "
                f"JSON ({e})"
            ) from e
        if not isinstance(source, Mapping) or "instruction_id_list" not in source:
            raise ValueError(f"example {example.uid}: answer JSON lacks instruction_id_list")
    return list(source["instruction_id_list"]), source.get("kwargs")


def _run_check(instruction_id: str, kwargs: Mapping[str, Any], text: str, prompt: str) -> bool:
    try:
        return bool(INSTRUCTIONS[instruction_id].check(text, kwargs, prompt))
    except Exception:  # noqa: BLE001 - model output must never take the trainer down
        return False


def check_instruction(
    instruction_id: str, kwargs: Mapping[str, Any] | None, response: str, prompt: str = ""
) -> bool:
    """Whether ``response`` (after any ``</think>``) satisfies one instruction.

    Raises ValueError only for a bad instruction id or kwargs, never because of ``response``.
    """
    norm = validate_spec([instruction_id], [kwargs], prompt)[0]
    text = strip_thinking(response) if isinstance(response, str) else ""
    return _run_check(instruction_id, norm, text, prompt)


def score_ifeval(
    response: str,
    instruction_ids: Sequence[str],
    kwargs: Sequence[Mapping[str, Any] | None] | None,
    prompt: str = "",
    gate: ContentGate | None = None,
) -> Score:
    """Reward = fraction of the instructions satisfied; reason "ok" only when all are.

    ``details["results"]`` lists ``{"id", "ok"}`` per instruction in order;
    ``details["n_passed"]``/``["n_total"]`` give the counts. With a ``gate``, a response that
    fails :func:`content_gate` against ``prompt`` scores 0 (reason "wrong") whatever it
    passed; ``details["gate"]`` holds the gate's measurements. Raises ValueError for a bad
    spec (see :func:`validate_spec`), never because of ``response``.
    """
    norms = validate_spec(instruction_ids, kwargs, prompt)
    text = strip_thinking(response) if isinstance(response, str) else ""
    oks = [
        _run_check(iid, kw, text, prompt) for iid, kw in zip(instruction_ids, norms, strict=True)
    ]
    results = [{"id": iid, "ok": ok} for iid, ok in zip(instruction_ids, oks, strict=True)]
    n_passed = sum(oks)
    reward = n_passed / len(oks)
    details: dict[str, Any] = {"results": results, "n_passed": n_passed, "n_total": len(results)}
    if gate is not None:
        required, repeated = _copied_by_request(instruction_ids, norms, prompt)
        verdict = content_gate(text, prompt, gate, required=required, repeated=repeated)
        details["gate"] = verdict
        if not verdict["ok"]:
            return Score(0.0, "wrong", details)
    return Score(reward, "ok" if n_passed == len(oks) else "wrong", details)


def gate_from_example(example: Example) -> ContentGate | None:
    """The example's ``content_gate`` (from ``meta``, else the JSON ``answer``); None if it
    has none. Raises ValueError for a malformed one."""
    value = example.meta.get("content_gate")
    if value is None and "instruction_id_list" not in example.meta:
        try:
            source = json.loads(example.answer)
        except (TypeError, ValueError):
            source = None
        if isinstance(source, Mapping):
            value = source.get("content_gate")
    return None if value is None else ContentGate.from_spec(value)


@register_verifier("ifeval")
def score_ifeval_example(response: str, example: Example) -> Score:
    """Registered verifier: the spec comes from ``example.meta`` or JSON in ``example.answer``;
    the prompt for ``repeat_prompt`` and the content gate (applied only when the spec has a
    ``content_gate``) is the example's last user message."""
    try:
        ids, kwargs = spec_from_example(example)
        gate = gate_from_example(example)
        return score_ifeval(response, ids, kwargs, prompt=example.question, gate=gate)
    except ValueError as e:
        # A broken spec is the data's fault, not the model's: exclude it, do not score 0.
        return Score(0.0, "INFRA_ERROR", {"error": str(e)[:500]})
