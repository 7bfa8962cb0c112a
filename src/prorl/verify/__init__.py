"""Verifiers: plain functions scoring a response against an example. No torch here.

Verifier modules in this package register themselves with ``@register_verifier("name")``
(``prorl.verify.registry``). ``get_verifier`` and ``list_verifiers`` import every module of
the package first (discovered with pkgutil), so adding a verifier is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from prorl.verify.registry import (
    Verifier,
    as_score,
    find_verifier,
    register_verifier,
    registered_verifiers,
)

__all__ = ["as_score", "get_verifier", "list_verifiers", "register_verifier"]

_SKIP = {"registry"}
_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"prorl.verify.{info.name}")
    _loaded = True


def get_verifier(name: str) -> Verifier:
    _load_all()
    return find_verifier(name)


def list_verifiers() -> list[str]:
    _load_all()
    return registered_verifiers()
