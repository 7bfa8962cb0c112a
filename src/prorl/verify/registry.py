"""Verifier registry: name -> plain function ``score(response, example) -> float | Score``.

Verifier modules in this package register themselves with ``@register_verifier("name")``;
``prorl.verify.get_verifier`` imports them all first, so adding a verifier is adding a file.
This module knows none of them. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable

from prorl.types import Example, Score

Verifier = Callable[[str, Example], "float | Score"]
_VERIFIERS: dict[str, Verifier] = {}


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    def deco(fn: Verifier) -> Verifier:
        _VERIFIERS[name] = fn
        return fn

    return deco


def find_verifier(name: str) -> Verifier:
    """The verifier registered so far under ``name`` (``prorl.verify.get_verifier`` loads
    the built-in ones first); ValueError naming the known ones."""
    if name not in _VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; known: {', '.join(sorted(_VERIFIERS))}")
    return _VERIFIERS[name]


def registered_verifiers() -> list[str]:
    """The names registered so far, sorted (``prorl.verify.list_verifiers`` loads first)."""
    return sorted(_VERIFIERS)


def as_score(result: float | Score) -> Score:
    """Normalise a verifier's return value; clamps to [0, 1]."""
    if isinstance(result, Score):
        reward = min(1.0, max(0.0, float(result.reward)))
        return Score(reward, result.reason, result.details, result.formatted)
    r = min(1.0, max(0.0, float(result)))
    return Score(r, "ok" if r >= 1.0 else "wrong")
