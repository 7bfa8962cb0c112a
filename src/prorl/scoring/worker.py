"""The worker side of ``prorl.scoring.pool``: what an item is scored with (a ``ScoreTarget``)
and the loop a worker runs.

A target is rebuilt *by name* inside the worker (functions and task objects do not travel
well between processes), and each worker caches what it built, so start-up is paid once
per worker.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import resource
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from prorl.types import Example, Score
from prorl.verify import as_score, get_verifier, list_verifiers

__all__ = ["ScoreTarget", "resolve_scorer", "score_one"]


@dataclass(frozen=True, eq=False)
class ScoreTarget:
    """What scores an item, rebuilt by name inside the worker (functions don't pickle well,
    task objects can be heavy): a registered ``verifier``, a ``task`` built with
    ``get_task(name, **settings)`` (cached per worker), or an importable ``function``
    given as ``"module:qualname"`` taking ``(response, example)``."""

    kind: str
    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def verifier(name: str) -> ScoreTarget:
        return ScoreTarget("verifier", name)

    @staticmethod
    def task(name: str, **settings: Any) -> ScoreTarget:
        return ScoreTarget("task", name, dict(settings))

    @staticmethod
    def function(path: str) -> ScoreTarget:
        return ScoreTarget("function", path)

    @property
    def key(self) -> str:
        return json.dumps([self.kind, self.name, self.settings], sort_keys=True, default=repr)


def _load_function(path: str) -> Callable[[str, Example], Any]:
    module, sep, qualname = path.partition(":")
    if not sep or not module or not qualname:
        raise ValueError(f"function scorer {path!r} must look like 'package.module:function'")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"function scorer {path!r} is not callable")
    return obj  # type: ignore[no-any-return]


def resolve_scorer(target: ScoreTarget | str) -> ScoreTarget:
    """A string names a registered verifier first (``math`` is both a verifier and a
    file-backed task that needs a path), then a task, then ``module:function``.
    Raises ValueError naming the problem for anything unknown."""
    if isinstance(target, ScoreTarget):
        if target.kind not in ("verifier", "task", "function"):
            raise ValueError(f"unknown scorer kind {target.kind!r}")
        if target.kind == "verifier":
            get_verifier(target.name)
        elif target.kind == "function":
            _load_function(target.name)
        else:
            _check_task_name(target.name)
        return target
    if target in list_verifiers():
        return ScoreTarget.verifier(target)
    if _is_task_name(target):
        return ScoreTarget.task(target)
    if ":" in target:
        _load_function(target)
        return ScoreTarget.function(target)
    _check_task_name(target)  # raises with the list of known tasks
    raise AssertionError("unreachable")


def _is_task_name(name: str) -> bool:
    from prorl.tasks import is_task_name

    return is_task_name(name)


def _check_task_name(name: str) -> None:
    if not _is_task_name(name):
        from prorl.tasks import UnknownTaskError

        verifiers = ", ".join(list_verifiers())
        raise UnknownTaskError(
            f"unknown task or verifier {name!r} (verifiers: {verifiers}; see `prorl tasks`)"
        )


def _build(
    scorer: ScoreTarget, cache: dict[str, Callable[[str, Example], Any]]
) -> Callable[..., Any]:
    fn = cache.get(scorer.key)
    if fn is None:
        if scorer.kind == "verifier":
            fn = get_verifier(scorer.name)
        elif scorer.kind == "task":
            from prorl.tasks import get_task

            fn = get_task(scorer.name, **scorer.settings).score
        else:
            fn = _load_function(scorer.name)
        cache[scorer.key] = fn
    return fn


def score_one(
    scorer: ScoreTarget, response: str, example: Example, cache: dict[str, Callable[..., Any]]
) -> Score:
    """Score one item in this process. Never raises: a verifier exception is the harness's
    failure (INFRA_ERROR), running out of memory is the response's (MEMORY)."""
    try:
        fn = _build(scorer, cache)
    except Exception as e:
        return Score(0.0, "INFRA_ERROR", {"error": f"{scorer.kind} {scorer.name!r}: {e!r}"[:300]})
    try:
        return as_score(fn(response, example))
    except MemoryError:
        return Score(0.0, "MEMORY")
    except Exception as e:
        return Score(0.0, "INFRA_ERROR", {"error": f"{scorer.name}: {e!r}"[:300]})


def _arm_cpu_limit(seconds: float) -> None:
    # A safety net for orphans only: the parent kills at the wall-clock deadline long before
    # this; if the parent is gone, the kernel's SIGXCPU ends a worker stuck in C code.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _boot(imports: Sequence[str], memory_limit_mb: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_limit_mb:
        limit = memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for module in imports:
        importlib.import_module(module)
    list_verifiers()  # import every verifier module now, not under an item's deadline
    if "math" in list_verifiers():  # load the LaTeX grammar before the first deadline runs
        get_verifier("math")("\\boxed{1}", Example("warm-up", "", (), "1"))


def serve(conn: Connection, imports: Sequence[str], memory_limit_mb: int | None) -> None:
    """The worker loop: boot, say ``ready``, then answer one item at a time until EOF."""
    try:
        _boot(imports, memory_limit_mb)
    except BaseException as e:
        conn.send(("boot_error", repr(e)[:500]))
        return
    conn.send(("ready", os.getpid()))
    cache: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            msg = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the parent is gone
        if msg is None:
            return
        tag, scorer, response, example, cpu_budget_s = msg
        _arm_cpu_limit(cpu_budget_s)
        s = score_one(scorer, response, example, cache)
        try:
            conn.send(("result", tag, s.reward, s.reason, dict(s.details), s.formatted))
        except (pickle.PicklingError, TypeError, AttributeError):
            conn.send(("result", tag, s.reward, s.reason, {"details": "unpicklable"}, s.formatted))


# A fresh interpreter runs this (see ``worker_command``): not multiprocessing, whose spawn and
# forkserver children re-import the parent's __main__ (a training script importing torch).
_BOOTSTRAP = (
    "import json, sys; cfg = json.loads(sys.argv[1]); sys.path[:0] = cfg['sys_path']; "
    "from prorl.scoring.worker import main; main(cfg)"
)


def worker_command(fd: int, imports: Sequence[str], memory_limit_mb: int | None) -> list[str]:
    """The argv that starts a worker talking over the inherited socket ``fd``."""
    sys_path = [p for p in sys.path if p]
    cfg = {"fd": fd, "imports": list(imports), "memory_limit_mb": memory_limit_mb}
    return [sys.executable, "-c", _BOOTSTRAP, json.dumps({**cfg, "sys_path": sys_path})]


def main(cfg: Mapping[str, Any]) -> None:
    serve(Connection(int(cfg["fd"])), cfg["imports"], cfg["memory_limit_mb"])
