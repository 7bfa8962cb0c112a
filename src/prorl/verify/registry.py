"""Verifier registry: name -> plain function ``score(response, example) -> float | Score``.

Verifier modules in this package register themselves with ``@register_verifier("name")``;
they are discovered with pkgutil, so adding a verifier is adding a file. No torch here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from prorl.types import Example, Score

Verifier = Callable[[str, Example], "float | Score"]
_VERIFIERS: dict[str, Verifier] = {}
_SKIP = {"registry"}
_loaded = False


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    def deco(fn: Verifier) -> Verifier:
        _VERIFIERS[name] = fn
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    import prorl.verify as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"prorl.verify.{info.name}")
    _loaded = True


def get_verifier(name: str) -> Verifier:
    _load_all()
    if name not in _VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; known: {', '.join(sorted(_VERIFIERS))}")
    return _VERIFIERS[name]


def list_verifiers() -> list[str]:
    _load_all()
    return sorted(_VERIFIERS)


def as_score(result: float | Score) -> Score:
    """Normalise a verifier's return value; clamps to [0, 1]."""
    if isinstance(result, Score):
        reward = min(1.0, max(0.0, float(result.reward)))
        return Score(reward, result.reason, result.details, result.formatted)
    r = min(1.0, max(0.0, float(result)))
    return Score(r, "ok" if r >= 1.0 else "wrong")
