"""Tasks: deterministic problem generators/loaders, each with a verifier.

Task modules in this package register themselves with ``@register_task`` or
``@register_family`` (``prorl.tasks.base``). ``get_task``, ``list_tasks`` and
``is_task_name`` import every module of the package first (discovered with pkgutil), so
adding a task family is adding a file, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prorl.config import ConfigError, TaskSpec
from prorl.plugins import import_all
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


def _load_builtin() -> None:
    # Importing the modules runs their registration decorators.
    import_all("prorl.tasks", __path__, {"base"})


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


def build_tasks(specs: Sequence[TaskSpec]) -> dict[str, Task]:
    """Every task of ``specs`` built up front (a run's ``data.tasks``): an unknown name or a
    bad setting is a ConfigError before any work."""
    tasks: dict[str, Task] = {}
    for spec in specs:
        try:
            tasks[spec.name] = get_task(spec.name, **spec.settings)
        except ValueError as e:
            raise ConfigError(f"data.tasks: {e}") from e
    return tasks
