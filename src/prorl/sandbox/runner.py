"""Run one untrusted program under every isolation layer available and judge what happened.

The verdict is decided here, from what the harness observed (its own wall timer, the
kernel's exit status and resource accounting, the output it captured), never from text the
program prints about itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prorl.sandbox import isolation as iso_mod
from prorl.sandbox import limits as L
from prorl.sandbox.isolation import BOX, Isolation, IsolationError, UidPool
from prorl.sandbox.limits import Limits, Verdict

_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc")
_GRACE_S = 0.5  # how long to drain pipes after the program is gone
_state: dict[str, Any] = {"iso": None, "error": None, "strict": None}
_probe_lock = threading.Lock()
_uids = UidPool()


@dataclass(frozen=True)
class Job:
    """Arguments of one ``run`` call, for ``run_many``."""

    program: str
    stdin: str = ""
    limits: Limits | None = None
    files: Mapping[str, str] | None = None
    interpreter: Sequence[str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def configure(*, strict: bool | None = None) -> None:
    """``strict=True`` makes a missing isolation layer fatal (``IsolationError``) instead of
    a one-time warning; the default comes from ``PRORL_SANDBOX_STRICT``."""
    _state["strict"] = strict


def active_isolation(refresh: bool = False) -> Isolation:
    """Probe (once) for the strongest configuration that actually runs a program here.

    Raises ``IsolationError`` when nothing works, or in strict mode when a layer is missing.
    """
    with _probe_lock:
        if refresh:
            _state["iso"], _state["error"] = None, None
        if _state["iso"] is None and _state["error"] is None:
            _state["iso"], _state["error"] = _probe()
            if _state["iso"] is not None and _state["iso"].missing:
                iso_mod.log.warning(
                    "prorl sandbox: running WITHOUT %s. Active layers: %s. "
                    "Set PRORL_SANDBOX_STRICT=1 to make this fatal.",
                    _state["iso"].describe_missing(),
                    ", ".join(_state["iso"].layers),
                )
    if _state["error"] is not None:
        raise IsolationError(_state["error"])
    found: Isolation = _state["iso"]
    strict = _state["strict"] if _state["strict"] is not None else iso_mod.strict_from_env()
    if strict and found.missing:
        raise IsolationError(f"strict sandbox mode: {found.describe_missing()}")
    return found


def _probe() -> tuple[Isolation | None, str | None]:
    prlimit = iso_mod.which("prlimit")
    if prlimit is None:
        return None, "the sandbox needs `prlimit` (util-linux), which is not installed"
    bwrap = None if os.environ.get("PRORL_SANDBOX_NO_BWRAP") else iso_mod.which("bwrap")
    setpriv = iso_mod.which("setpriv") if os.geteuid() == 0 else None
    kill = iso_mod.which("kill")
    configs = []
    for python in iso_mod.python_candidates():
        for bw in dict.fromkeys([bwrap, None]):
            for sp in dict.fromkeys([setpriv, None]):
                configs.append(Isolation(python, prlimit, bw, sp, kill))
    configs.sort(key=lambda c: -len(c.layers))  # strongest first, stable in python order
    tried = []
    for config in configs:
        v = _execute(config, "import sys; print(sys.version_info[0])", "", Limits(), {}, None)
        if v.status == L.OK and v.stdout.strip() == "3":
            return config, None
        tried.append(f"{config.layers} {config.python}: {v.status} {v.detail or v.stderr[-200:]}")
    return None, "no sandbox configuration works here; tried " + " | ".join(tried)


def run(
    program: str,
    stdin: str = "",
    limits: Limits | None = None,
    files: Mapping[str, str] | None = None,
    interpreter: Sequence[str] | None = None,
) -> Verdict:
    """Run ``program`` (Python 3 source unless ``interpreter`` is given: the command that
    runs ``/box/main.py``, e.g. ``["/bin/sh"]``) on ``stdin`` under ``limits``.

    ``files`` are extra read-only files next to the program (plain names). Never raises on
    anything the program does; returns INFRA_ERROR when the harness itself fails. Raises
    ``ValueError`` for bad arguments and ``IsolationError`` in strict mode.
    """
    limits = limits or Limits()
    for name in files or {}:
        if not _FILE_NAME.fullmatch(name) or name == "main.py":
            raise ValueError(f"bad sandbox file name {name!r}: use a plain name like 'data.txt'")
    try:
        iso = active_isolation()
    except IsolationError as e:
        if "strict" in str(e):
            raise
        return Verdict(L.INFRA_ERROR, detail=str(e))
    return _execute(iso, program, stdin, limits, files or {}, interpreter)


def run_many(
    jobs: Iterable[Job | Mapping[str, Any]], max_workers: int | None = None
) -> list[Verdict]:
    """Run jobs concurrently (default: one per CPU core); verdicts come back in job order."""
    items = [j if isinstance(j, Job) else Job(**j) for j in jobs]
    if not items:
        return []
    workers = max(1, min(len(items), max_workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="prorl-sandbox") as pool:
        futures = [
            pool.submit(run, j.program, j.stdin, j.limits, j.files, j.interpreter) for j in items
        ]
        return [f.result() for f in futures]


def _execute(
    iso: Isolation,
    program: str,
    stdin: str,
    limits: Limits,
    files: Mapping[str, str],
    interpreter: Sequence[str] | None,
) -> Verdict:
    start = time.monotonic()
    uid = _uids.take() if iso.setpriv else None
    box = tempfile.mkdtemp(prefix="prorl-box-")
    try:
        os.chmod(box, 0o755)  # the per-run uid must read the program, never write here
        for name, text in {"main.py": program, **files}.items():
            with open(os.path.join(box, name), "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(os.path.join(box, name), 0o644)
        argv = [*(interpreter or [iso.python, "-I", "-S"]), f"{BOX}/main.py"]
        return _supervise(iso, limits, box, uid, argv, stdin.encode(), start)
    except OSError as e:
        return Verdict(L.INFRA_ERROR, detail=f"harness error: {e!r}", isolation=iso.layers)
    finally:
        if uid is not None:
            if not iso.bwrap:
                iso_mod.reap_uid(iso, uid)
            _uids.give_back(uid)
        shutil.rmtree(box, ignore_errors=True)


def _supervise(
    iso: Isolation,
    limits: Limits,
    box: str,
    uid: int | None,
    argv: list[str],
    data: bytes,
    start: float,
) -> Verdict:
    status_r, status_w = os.pipe()
    cmd, cwd = iso_mod.command(iso, limits, box, uid, argv)
    if iso.bwrap:
        cmd[cmd.index("--json-status-fd") + 1] = str(status_w)
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=iso_mod.SAFE_ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w,),
            start_new_session=True,  # its own process group: one killpg reaches it all
        )
    finally:
        os.close(status_w)
    try:
        io = _pump(proc, data, status_r, limits, start + limits.wall_s)
    finally:
        _kill(proc)
        _, wait_status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(wait_status)  # Popen must not wait again
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        os.close(status_r)
    return _judge(iso, limits, io, proc.returncode, usage, time.monotonic() - start)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    # With namespaces, killing bwrap takes its pid-1 with it (--die-with-parent), and the
    # kernel then kills everything else in the pid namespace.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _pump(
    proc: subprocess.Popen[bytes], data: bytes, status_r: int, limits: Limits, deadline: float
) -> dict[str, Any]:
    """Feed stdin, collect capped output, stop at exit, deadline or output cap."""
    assert proc.stdin and proc.stdout and proc.stderr
    out, err, status = bytearray(), bytearray(), bytearray()
    io: dict[str, Any] = {"timeout": False, "output_limit": False}
    sel = selectors.DefaultSelector()
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    for f, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ, tag)
    sel.register(status_r, selectors.EVENT_READ, "status")
    os.set_blocking(proc.stdin.fileno(), False)
    if data:
        sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "in")
    else:
        proc.stdin.close()
    view, exited_at = memoryview(data), None
    try:
        while exited_at is None or sel.get_map():
            now = time.monotonic()
            if exited_at is None and now >= deadline:
                io["timeout"] = True
                break
            if exited_at is not None and now - exited_at > _GRACE_S:
                break
            limit_at = deadline if exited_at is None else exited_at + _GRACE_S
            for key, _ in sel.select(max(0.0, limit_at - now)):
                if key.data == "exit":
                    exited_at = time.monotonic()
                    sel.unregister(pidfd)
                elif key.data == "in":
                    view = _feed(sel, proc, view)
                else:
                    buf = {"out": out, "err": err, "status": status}[key.data]
                    chunk = _read(sel, key.fd)
                    if key.data == "err":
                        chunk = chunk[: max(0, limits.stderr_bytes - len(err))]
                    buf += chunk
            if len(out) > limits.stdout_bytes:
                io["output_limit"] = True
                break
    finally:
        sel.close()
        os.close(pidfd)
    io.update(
        out=bytes(out[: limits.stdout_bytes]),
        err=bytes(err),
        status=status.decode(errors="replace"),
    )
    return io


def _feed(
    sel: selectors.BaseSelector, proc: subprocess.Popen[bytes], view: memoryview
) -> memoryview:
    assert proc.stdin
    try:
        n = os.write(proc.stdin.fileno(), view[: 1 << 16])
        view = view[n:]
    except BlockingIOError:
        return view
    except (BrokenPipeError, OSError):
        view = view[len(view) :]  # the program closed stdin: it no longer wants input
    if not view:
        sel.unregister(proc.stdin.fileno())
        proc.stdin.close()
    return view


def _read(sel: selectors.BaseSelector, fd: int) -> bytes:
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""
    if not chunk:
        sel.unregister(fd)
    return chunk


def _host_peak_rss_mb() -> float:
    # Linux folds the forked copy of this process into the child's ru_maxrss at exec, so a
    # large host (a trainer holding a model) makes every child look large. An rss no bigger
    # than our own peak proves nothing about the program's memory use.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _judge(
    iso: Isolation, limits: Limits, io: dict[str, Any], returncode: int, usage: Any, wall: float
) -> Verdict:
    cpu = float(usage.ru_utime + usage.ru_stime)
    rss = usage.ru_maxrss / 1024.0
    code: int | None = 128 - returncode if returncode < 0 else returncode
    detail = ""
    if iso.bwrap:
        started = '"child-pid"' in io["status"]
        m = re.search(r'"exit-code"\s*:\s*(-?\d+)', io["status"])
        code = int(m.group(1)) if m else None
        if not started and not io["timeout"] and not io["output_limit"]:
            err = io["err"].decode(errors="replace")[-300:]
            return Verdict(
                L.INFRA_ERROR,
                stderr=err,
                wall_s=wall,
                isolation=iso.layers,
                detail=f"sandbox failed to start: {err.strip()}",
            )
    stderr = io["err"].decode(errors="replace")
    if io["output_limit"]:
        status, code = L.OUTPUT_LIMIT, None
    elif io["timeout"] and any(s in stderr[-2000:] for s in _MEMORY_SIGNS):
        status, code = L.MEMORY, None  # ran out of memory, then hung on its way out
    elif io["timeout"]:
        status, code, detail = L.TIMEOUT, None, f"wall limit {limits.wall_s}s"
    elif code == 0:
        status = L.OK
    elif (
        code in (128 + signal.SIGXCPU, 128 + signal.SIGKILL)
        and cpu >= int(limits.cpu_s + 0.999) - 0.05
    ):
        status, detail = L.TIMEOUT, f"cpu limit {limits.cpu_s}s"
    elif any(s in stderr[-2000:] for s in _MEMORY_SIGNS) or (
        rss >= 0.95 * limits.memory_mb and rss > _host_peak_rss_mb() + 1.0
    ):
        status = L.MEMORY  # only ever relabels a failure; it cannot make a run pass
    else:
        status = L.RUNTIME_ERROR
    return Verdict(
        status,
        stdout=io["out"].decode(errors="replace"),
        stderr=stderr,
        exit_code=code,
        wall_s=wall,
        cpu_s=cpu,
        max_rss_mb=rss,
        isolation=iso.layers,
        detail=detail,
    )
