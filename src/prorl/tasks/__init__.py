"""Tasks: deterministic problem generators/loaders, each with a verifier."""

from prorl.tasks.base import (
    SPLITS,
    Task,
    TaskInfo,
    UnknownTaskError,
    get_task,
    list_tasks,
    register_family,
    register_task,
)

__all__ = [
    "SPLITS",
    "Task",
    "TaskInfo",
    "UnknownTaskError",
    "get_task",
    "list_tasks",
    "register_family",
    "register_task",
]
