"""Self-registering modules: importing every module of a package runs its registration
decorators (tasks, verifiers), so adding one is adding a file."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

_done: set[str] = set()


def import_all(package: str, path: Iterable[str], skip: set[str]) -> None:
    """Import each module of ``package`` (found on its ``__path__``) except ``skip`` and
    private ones, once; a failed import raises and is retried on the next call."""
    if package in _done:
        return
    for info in pkgutil.iter_modules(list(path)):
        if info.name not in skip and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    _done.add(package)
