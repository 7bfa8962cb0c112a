"""Tasks: deterministic problem generators/loaders, each with a verifier.

Task modules in this package register themselves with ``@register_task`` or
``@register_family`` (``prorl.tasks.base``). ``get_task``, ``list_tasks`` and
``is_task_name`` import every module of the package first (discovered with pkgutil), so
adding a task family is adding a file, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from prorl.tasks.base import (
    SPLITS,
    Task,
    TaskInfo,
    UnknownTaskError,
    build_task,
    is_registered,
    register_family,
    register_task,
    registered_tasks,
)

__all__ = [
    "SPLITS",
    "Task",
    "TaskInfo",
    "UnknownTaskError",
    "get_task",
    "is_task_name",
    "list_tasks",
    "register_family",
    "register_task",
]

_SKIP = {"base"}
_loaded = False


def _load_builtin() -> None:
    # Importing the modules runs their @register_task decorators.
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"prorl.tasks.{info.name}")
    _loaded = True


def get_task(name: str, **settings: Any) -> Task:
    _load_builtin()
    return build_task(name, **settings)


def list_tasks() -> list[TaskInfo]:
    _load_builtin()
    return registered_tasks()


def is_task_name(name: str) -> bool:
    """Whether ``get_task`` knows ``name``: a task, or ``prefix/<member>`` of a family (the
    member itself is not checked). Builds nothing."""
    _load_builtin()
    return is_registered(name)
