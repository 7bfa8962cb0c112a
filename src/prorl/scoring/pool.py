"""Verification with hard deadlines: persistent worker processes, one place for timeouts.

Verifiers are plain functions that may hang (sympy on a power tower), eat memory or crash on
model output. ``VerifierPool`` runs them in persistent worker processes and gives each item a
hard wall-clock deadline: a worker past it is killed (its whole process group) and replaced,
and the item scores 0 with reason ``TIMEOUT`` (the model's fault). A worker that dies is
replaced and its item retried once; if it dies again the item is ``INFRA_ERROR`` (excluded
from the update by the trainer, counted in metrics). The pool works from any thread: no
signals are used in the caller, unlike math-verify's own ``signal.alarm`` timeout.

Each worker is a fresh interpreter (``python -c``, its own session so the whole process group
can be killed) that imports only the verifier and task modules: never ``fork`` (a copy of a
trainer holding torch threads and gigabytes), and not multiprocessing's spawn/forkserver
either, whose children re-import the parent's ``__main__`` (a training script importing
torch). Start-up (~1 s) is paid once per worker and never counted against an item's deadline.

``max_workers=0`` scores in-process, serially and without deadlines: for debugging only.
Any object with ``score_batch``/``score``/``close`` (``VerifierExecutor``) can stand in for
the pool, e.g. a Ray-backed executor; the train step never needs to know which it has.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from prorl.scoring.worker import ScoreTarget, resolve_scorer, score_one, worker_command
from prorl.types import Example, Score

__all__ = [
    "PoolStats",
    "ScoreItem",
    "ScoreTarget",
    "VerifierExecutor",
    "VerifierPool",
    "resolve_scorer",
    "score_one",
]

# Worker environment: one BLAS/OpenMP thread each (the pool is the parallelism), no warnings.
_WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}


ScoreItem = tuple["ScoreTarget | str", str, Example]


class VerifierExecutor(Protocol):
    """The swap point for verification back ends (local process pool, Ray, ...)."""

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]: ...

    def score(
        self, target: ScoreTarget | str, responses: Sequence[str], examples: Sequence[Example]
    ) -> list[Score]: ...

    def close(self) -> None: ...


@dataclass
class PoolStats:
    """Counts for metrics. ``timeouts``/``infra_errors``/``memory`` count item reasons;
    ``crashes`` are worker deaths, ``restarts`` workers replaced (after a kill or a death)."""

    items: int = 0
    timeouts: int = 0
    infra_errors: int = 0
    memory: int = 0
    crashes: int = 0
    restarts: int = 0
    seconds: float = 0.0

    def add(self, other: PoolStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_metrics(self, prefix: str = "verify/") -> dict[str, float]:
        return {prefix + f.name: float(getattr(self, f.name)) for f in fields(self)}


# ----------------------------------------------------------------------------- parent side


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    conn: Connection
    started: float
    ready: bool = False
    item: int | None = None
    deadline: float = 0.0


def _kill(w: _Worker) -> None:
    # The group exists once the worker ran setsid(); it holds anything the verifier started.
    with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
        os.killpg(w.proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        w.proc.kill()
    w.conn.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        w.proc.wait(timeout=5)


def _shutdown(workers: list[_Worker]) -> None:
    for w in workers:
        with contextlib.suppress(OSError):
            w.conn.send_bytes(pickle.dumps(None))
    for w in workers:
        try:
            w.proc.wait(timeout=1)
            w.conn.close()
        except subprocess.TimeoutExpired:
            _kill(w)
    workers.clear()


class _BatchRun:
    """One batch through the pool's workers: hand out items, wait, collect, enforce deadlines.

    Every item ends with exactly one Score. Items are tagged with a batch number so a late
    answer from an interrupted earlier batch can never be taken for this batch's."""

    _counter = 0

    def __init__(self, pool: VerifierPool, items: Sequence[tuple[ScoreTarget, str, Example]]):
        _BatchRun._counter += 1
        self.batch_no = _BatchRun._counter
        self.pool = pool
        self.stats = PoolStats(items=len(items))
        self.results: list[Score | None] = [None] * len(items)
        self.attempts = [0] * len(items)
        self.payloads: list[bytes] = []
        self.pending: deque[int] = deque()
        self.boot_failures = 0
        self.boot_error = ""
        cpu_budget_s = 2 * pool.timeout_s + 5
        for i, (scorer, response, example) in enumerate(items):
            try:
                tag = (self.batch_no, i)
                payload = pickle.dumps((tag, scorer, response, example, cpu_budget_s))
            except Exception as e:  # e.g. an unpicklable object in example.meta
                self.results[i] = Score(0.0, "INFRA_ERROR", {"error": f"cannot send: {e!r}"[:300]})
                payload = b""
            else:
                self.pending.append(i)
            self.payloads.append(payload)

    def run(self) -> list[Score]:
        workers = self.pool.workers
        while len(workers) < self.pool.max_workers:  # slots dropped after boot failures
            workers.append(self.pool.spawn_worker())
        try:
            while self.pending or any(w.item is not None for w in workers):
                if not workers:
                    self._fail_pending(f"verifier workers fail to start: {self.boot_error}")
                    break
                self._dispatch()
                self._wait_and_collect()
                self._enforce_deadlines()
        finally:
            for w in list(workers):  # interrupted: don't leave half-done items in a worker
                if w.item is not None:
                    self._replace(w)
        assert all(r is not None for r in self.results)
        return [r for r in self.results if r is not None]

    def _dispatch(self) -> None:
        for w in list(self.pool.workers):
            if not self.pending:
                return
            if not w.ready or w.item is not None:
                continue
            i = self.pending.popleft()
            try:
                w.conn.send_bytes(self.payloads[i])
            except OSError:  # it died while idle: not this item's fault
                self.pending.appendleft(i)
                self._died(w)
                continue
            w.item = i
            w.deadline = time.monotonic() + self.pool.timeout_s

    def _wait_and_collect(self) -> None:
        workers = self.pool.workers
        times = [w.deadline for w in workers if w.item is not None]
        times += [w.started + self.pool.boot_timeout_s for w in workers if not w.ready]
        timeout = max(0.0, min(times) - time.monotonic()) if times else 0.05
        ready = wait([w.conn for w in workers], timeout)
        for w in list(workers):
            if w.conn in ready:
                self._receive(w)

    def _receive(self, w: _Worker) -> None:
        try:
            msg = w.conn.recv()
        except Exception:  # EOF: the worker died (killed by the kernel, crashed in C, ...)
            self._died(w)
            return
        if msg[0] == "ready":
            w.ready = True
        elif msg[0] == "result":
            (batch_no, i), reward, reason, details, formatted = msg[1:]
            if batch_no == self.batch_no and i == w.item:
                self.results[i] = Score(reward, reason, details, formatted)
                w.item = None
        elif msg[0] == "boot_error":
            self.boot_error = str(msg[1])

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for w in list(self.pool.workers):
            if w.item is not None and now >= w.deadline:
                if w.conn.poll(0):  # the answer arrived just in time
                    self._receive(w)
                    if w.item is None or w not in self.pool.workers:
                        continue
                elapsed = round(now - w.deadline + self.pool.timeout_s, 3)
                details = {"timeout_s": self.pool.timeout_s, "elapsed_s": elapsed}
                self.results[w.item] = Score(0.0, "TIMEOUT", details)
                w.item = None
                self._replace(w)
            elif not w.ready and now >= w.started + self.pool.boot_timeout_s:
                self.boot_error = self.boot_error or "no ready signal within boot_timeout_s"
                self._died(w)

    def _died(self, w: _Worker) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.proc.wait(timeout=1)
        code = w.proc.returncode
        if w.ready:
            self.stats.crashes += 1
        else:
            self.boot_failures += 1
            self.boot_error = self.boot_error or f"worker exited with code {code} while starting"
        i = w.item
        if i is not None:
            self.attempts[i] += 1
            if self.attempts[i] > self.pool.max_retries:
                error = f"verifier worker died (exit code {code}) on every try"
                self.results[i] = Score(0.0, "INFRA_ERROR", {"error": error})
            else:
                self.pending.appendleft(i)  # maybe the worker, not the item: retry once
            w.item = None
        if self.boot_failures > 3 * max(1, self.pool.max_workers):
            _kill(w)  # stop respawning a worker that cannot start
            self.pool.workers.remove(w)
        else:
            self._replace(w)

    def _replace(self, w: _Worker) -> None:
        self.pool.replace_worker(w)
        self.stats.restarts += 1

    def _fail_pending(self, error: str) -> None:
        for i in self.pending:
            self.results[i] = Score(0.0, "INFRA_ERROR", {"error": error[:300]})
        self.pending.clear()


class VerifierPool:
    """Score (response, example) items with hard per-item deadlines in worker processes.

    ``timeout_s`` is measured from the moment an item is handed to a ready worker, so a
    replacement's start-up never eats an item's time. ``memory_limit_mb`` caps each worker's
    address space (None: no cap). ``imports`` are modules imported in the parent and in
    every worker so that plugin verifiers/tasks outside ``prorl`` register themselves.
    Thread-safe: concurrent calls are serialised. Use as a context manager or call close()."""

    def __init__(
        self,
        max_workers: int | None = None,
        timeout_s: float = 10.0,
        *,
        memory_limit_mb: int | None = 4096,
        imports: Sequence[str] = (),
        max_retries: int = 1,
        boot_timeout_s: float = 60.0,
    ) -> None:
        if max_workers is not None and max_workers < 0:
            raise ValueError(f"max_workers must be >= 0 or None, got {max_workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        for module in imports:
            importlib.import_module(module)
        self.max_workers = min(4, os.cpu_count() or 1) if max_workers is None else max_workers
        self.timeout_s = float(timeout_s)
        self.memory_limit_mb = memory_limit_mb
        self.imports = tuple(imports)
        self.max_retries = max_retries
        self.boot_timeout_s = boot_timeout_s
        self.total = PoolStats()
        self.last_batch = PoolStats()
        self._lock = threading.Lock()
        self._cache: dict[str, Callable[..., Any]] = {}
        self._resolved: dict[str, ScoreTarget] = {}
        self._closed = False
        self._workers: list[_Worker] = [self.spawn_worker() for _ in range(self.max_workers)]
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    # -- public API

    def score(
        self, target: ScoreTarget | str, responses: Sequence[str], examples: Sequence[Example]
    ) -> list[Score]:
        """Score ``responses[i]`` against ``examples[i]`` with one verifier or task."""
        if len(responses) != len(examples):
            raise ValueError(f"{len(responses)} responses but {len(examples)} examples")
        return self.score_batch([(target, r, e) for r, e in zip(responses, examples, strict=True)])

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        """One Score per item, in order. Never raises on model output; unknown verifier or
        task names raise ValueError before anything runs."""
        resolved = [(self._resolve(t), r, e) for t, r, e in items]
        with self._lock:
            if self._closed:
                raise RuntimeError("VerifierPool is closed")
            t0 = time.monotonic()
            if self.max_workers == 0:
                stats = PoolStats(items=len(resolved))
                scores = [score_one(s, r, e, self._cache) for s, r, e in resolved]
            else:
                run = _BatchRun(self, resolved)
                scores = run.run()
                stats = run.stats
            for s in scores:
                stats.timeouts += s.reason == "TIMEOUT"
                stats.infra_errors += s.reason == "INFRA_ERROR"
                stats.memory += s.reason == "MEMORY"
            stats.seconds = time.monotonic() - t0
            self.last_batch = stats
            self.total.add(stats)
            return scores

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    # -- used by _BatchRun

    @property
    def workers(self) -> list[_Worker]:
        return self._workers

    def spawn_worker(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        try:
            proc = subprocess.Popen(
                worker_command(fd, self.imports, self.memory_limit_mb),
                pass_fds=(fd,),
                start_new_session=True,  # its own process group, killed as a whole
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # `prorl score` prints JSON on stdout
                env={**os.environ, **_WORKER_ENV},
            )
        finally:
            child_sock.close()
        return _Worker(proc, Connection(parent_sock.detach()), started=time.monotonic())

    def replace_worker(self, w: _Worker) -> _Worker:
        _kill(w)
        new = self.spawn_worker()
        self._workers[self._workers.index(w)] = new
        return new

    def _resolve(self, target: ScoreTarget | str) -> ScoreTarget:
        if isinstance(target, ScoreTarget):
            return resolve_scorer(target)
        if target not in self._resolved:
            self._resolved[target] = resolve_scorer(target)
        return self._resolved[target]
