"""The task contract and the registry: the whole plugin system.

A task turns an index into an ``Example`` deterministically (item i of a split is rebuilt
from (seed, i)) and scores a response with a plain verifier function. Register a factory
with ``@register_task("name", domain=...)``; ``prorl.tasks.get_task(name, **settings)``
builds it, after importing every task module of the package. This module knows none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prorl.types import Example, Score

Verifier = Callable[[str, Example], "float | Score"]
SPLITS = ("train", "val", "test")


class Task(Protocol):
    name: str
    domain: str

    def example(self, index: int, split: str = "train") -> Example:
        """Item ``index`` of ``split``; the same arguments always give the same example."""
        ...

    def size(self, split: str = "train") -> int | None:
        """Number of items in ``split``, or None for an unbounded procedural task."""
        ...

    def score(self, response: str, example: Example) -> float | Score:
        """Correctness in [0, 1] (never format credit). Never raises on model output."""
        ...

    def format_answer(self, content: str) -> str:
        """``content`` written the way the task asks for its final answer (for example
        ``<answer>content</answer>`` or ``\\boxed{content}``); ``content`` itself where the
        task has no answer format. The self-check and the null floor wrap answers with it."""
        ...

    def reference_response(self, example: Example) -> str | None:
        """A response that gives the reference answer in the task's format, so it must score
        1; None where the task has no single reference (e.g. instruction following)."""
        ...


@dataclass(frozen=True)
class TaskInfo:
    name: str
    domain: str
    factory: Callable[..., Task]
    description: str = ""
    verifier: str = ""


_REGISTRY: dict[str, TaskInfo] = {}
# Families whose names are resolved dynamically (e.g. every reasoning-gym dataset):
# prefix -> factory taking (name_after_prefix, **settings).
_FAMILIES: dict[str, TaskInfo] = {}


class UnknownTaskError(ValueError):
    pass


def register_task(
    name: str, *, domain: str, description: str = "", verifier: str = ""
) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        _REGISTRY[name] = TaskInfo(name, domain, factory, description, verifier)
        return factory

    return deco


def register_family(
    prefix: str, *, domain: str, description: str = "", verifier: str = ""
) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Register a family addressed as ``prefix/<member>`` (e.g. ``rg/leg_counting``)."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        _FAMILIES[prefix] = TaskInfo(prefix, domain, factory, description, verifier)
        return factory

    return deco


def build_task(name: str, **settings: Any) -> Task:
    """``get_task`` over what is registered so far (``prorl.tasks.get_task`` loads the
    built-in task modules first)."""
    if name in _REGISTRY:
        return _REGISTRY[name].factory(**settings)
    prefix, _, member = name.partition("/")
    if member and prefix in _FAMILIES:
        return _FAMILIES[prefix].factory(member, **settings)
    known = ", ".join(sorted(_REGISTRY) + [f"{p}/<name>" for p in sorted(_FAMILIES)])
    raise UnknownTaskError(f"unknown task {name!r}; known tasks: {known} (see `prorl tasks`)")


def registered_tasks() -> list[TaskInfo]:
    """The tasks and families registered so far (``prorl.tasks.list_tasks`` loads first)."""
    return [*_REGISTRY.values(), *_FAMILIES.values()]


def is_registered(name: str) -> bool:
    """Whether ``name`` is a task registered so far or ``prefix/<member>`` of a family."""
    prefix, _, member = name.partition("/")
    return name in _REGISTRY or bool(member and prefix in _FAMILIES)
