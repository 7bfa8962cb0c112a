"""Running untrusted, model-written programs: a real isolation boundary without Docker.

``run(program, stdin, limits, files)`` executes one program and returns a ``Verdict``;
``run_many(jobs)`` runs many concurrently. See docs/sandbox.md for the layers and the
threat model. No torch here.
"""

from prorl.sandbox.isolation import Isolation, IsolationError
from prorl.sandbox.limits import (
    INFRA_ERROR,
    MEMORY,
    OK,
    OUTPUT_LIMIT,
    RUNTIME_ERROR,
    STATUSES,
    TIMEOUT,
    Limits,
    Verdict,
)
from prorl.sandbox.runner import Job, active_isolation, configure, run, run_many

__all__ = [
    "INFRA_ERROR",
    "MEMORY",
    "OK",
    "OUTPUT_LIMIT",
    "RUNTIME_ERROR",
    "STATUSES",
    "TIMEOUT",
    "Isolation",
    "IsolationError",
    "Job",
    "Limits",
    "Verdict",
    "active_isolation",
    "configure",
    "run",
    "run_many",
]
