"""Verifiers: plain functions scoring a response against an example. No torch here.

Verifier modules in this package register themselves with ``@register_verifier("name")``
(``prorl.verify.registry``). ``get_verifier`` and ``list_verifiers`` import every module of
the package first (discovered with pkgutil), so adding a verifier is adding a file.
"""

from __future__ import annotations

from prorl.plugins import import_all
from prorl.verify.registry import (
    Verifier,
    as_score,
    find_verifier,
    register_verifier,
    registered_verifiers,
)

__all__ = ["as_score", "get_verifier", "list_verifiers", "register_verifier"]


def _load_all() -> None:
    # Importing the modules runs their registration decorators.
    import_all("prorl.verify", __path__, {"registry"})


def get_verifier(name: str) -> Verifier:
    _load_all()
    return find_verifier(name)


def list_verifiers() -> list[str]:
    _load_all()
    return registered_verifiers()
