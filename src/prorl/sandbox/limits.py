"""Resource limits for one sandboxed execution and the structured verdict it produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Verdict statuses. Only the harness decides a status; exit codes and printed text never
# turn a failure into OK (see docs/sandbox.md).
OK = "OK"
TIMEOUT = "TIMEOUT"
MEMORY = "MEMORY"
RUNTIME_ERROR = "RUNTIME_ERROR"
OUTPUT_LIMIT = "OUTPUT_LIMIT"
INFRA_ERROR = "INFRA_ERROR"
STATUSES = (OK, TIMEOUT, MEMORY, RUNTIME_ERROR, OUTPUT_LIMIT, INFRA_ERROR)


@dataclass(frozen=True)
class Limits:
    """Per-execution limits. Defaults suit one test case of a competitive-programming task.

    ``cpu_s`` is CPU seconds per process (RLIMIT_CPU); ``wall_s`` is the outer timer that
    kills every process the program started; ``memory_mb`` is the address-space limit per
    process; ``processes`` bounds the processes (and threads) the program may have at once;
    ``file_mb`` bounds any one written file; ``tmp_mb`` is the size of the private, writable
    /tmp; ``open_files`` is RLIMIT_NOFILE; ``stdout_bytes``/``stderr_bytes`` cap what is kept
    (exceeding ``stdout_bytes`` ends the run with OUTPUT_LIMIT; stderr is just truncated).
    """

    cpu_s: float = 5.0
    wall_s: float = 10.0
    memory_mb: int = 512
    processes: int = 32
    file_mb: int = 16
    tmp_mb: int = 32
    open_files: int = 64
    stdout_bytes: int = 1 << 20
    stderr_bytes: int = 1 << 16

    def __post_init__(self) -> None:
        for name in ("cpu_s", "wall_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("memory_mb", "processes", "file_mb", "tmp_mb", "open_files"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.memory_mb < 32:
            raise ValueError(
                f"Limits.memory_mb must be >= 32 (Python needs it), got {self.memory_mb}"
            )
        if self.open_files < 8:
            raise ValueError(f"Limits.open_files must be >= 8, got {self.open_files}")
        if self.stdout_bytes < 1 or self.stderr_bytes < 1:
            raise ValueError("Limits.stdout_bytes and Limits.stderr_bytes must be >= 1")


@dataclass(frozen=True)
class Verdict:
    """What happened to one execution.

    ``status`` is one of STATUSES. ``stdout`` is the program's output (capped at
    ``Limits.stdout_bytes``), ``stderr`` its error output (capped). ``exit_code`` is the
    program's exit status as the sandbox saw it (128+N for signal N) or None when it was
    killed by the harness. ``wall_s`` runs from sandbox start to verdict; ``cpu_s`` and
    ``max_rss_mb`` come from the kernel's accounting of the whole process tree that was
    waited for. ``isolation`` names the layers that were active.
    """

    status: str
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    isolation: tuple[str, ...] = ()
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK
