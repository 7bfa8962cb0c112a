"""IFEval-style instruction-following verifier: reward = share of constraints satisfied.

The constraint spec uses IFEval's data format: ``instruction_id_list`` (e.g.
``"punctuation:no_comma"``) with a parallel ``kwargs`` list of dicts, so rows of the original
IFEval data (or its Hugging Face copy, whose kwargs dicts hold every key with nulls) work as
they are. Only the text after the last ``</think>`` is judged.

Bad specs (unknown id, missing or malformed kwargs) raise ``ValueError`` from
:func:`validate_spec`, which loaders call when they read data; the registered verifier never
raises: a bad spec found at scoring time is reported as INFRA_ERROR, and any failure while
checking model output counts as that constraint not being met.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from prorl.types import Example, Score
from prorl.verify.ifeval_checks import INSTRUCTIONS, normalize_kwargs
from prorl.verify.ifeval_text import strip_thinking
from prorl.verify.registry import register_verifier

__all__ = [
    "INSTRUCTION_IDS",
    "check_instruction",
    "score_ifeval",
    "spec_from_example",
    "validate_spec",
]

INSTRUCTION_IDS: tuple[str, ...] = tuple(sorted(INSTRUCTIONS))


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
) -> Score:
    """Reward = fraction of the instructions satisfied; reason "ok" only when all are.

    ``details["results"]`` lists ``{"id", "ok"}`` per instruction in order;
    ``details["n_passed"]``/``["n_total"]`` give the counts. Raises ValueError for a bad
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
    details = {"results": results, "n_passed": n_passed, "n_total": len(results)}
    return Score(reward, "ok" if n_passed == len(oks) else "wrong", details)


@register_verifier("ifeval")
def score_ifeval_example(response: str, example: Example) -> Score:
    """Registered verifier: the spec comes from ``example.meta`` or JSON in ``example.answer``;
    the prompt for ``repeat_prompt`` defaults to the example's last user message."""
    try:
        ids, kwargs = spec_from_example(example)
        return score_ifeval(response, ids, kwargs, prompt=example.question)
    except ValueError as e:
        # A broken spec is the data's fault, not the model's: exclude it, do not score 0.
        return Score(0.0, "INFRA_ERROR", {"error": str(e)[:500]})
