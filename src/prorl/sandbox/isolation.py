"""Which isolation layers this machine offers, and the command line that stacks them.

Layers, strongest first (docs/sandbox.md explains each):

- ``namespaces``: bubblewrap with new user, pid, net, mount, ipc, uts and cgroup namespaces,
  a read-only system, a private size-limited /tmp, no view of the project, checkpoints or
  home, ``--die-with-parent`` and ``--new-session``;
- ``uid``: when the harness runs as root, every execution runs as its own unprivileged uid
  (so RLIMIT_NPROC holds; the kernel ignores it for root) and all its processes can be
  killed by uid;
- ``rlimits`` (always, via ``prlimit``): CPU, address space, processes, file size, open
  files, no core files;
- ``clean-env``: the environment is replaced by a fixed, secret-free one;
- the outer wall timer, output caps and the verdict logic live in ``runner``.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import threading
from dataclasses import dataclass

from prorl.sandbox.limits import Limits

log = logging.getLogger("prorl.sandbox")

BOX = "/box"  # where the program and its files appear inside the namespace sandbox
SAFE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
_UID_BASE, _UID_SPAN = 200_000, 1_000_000
ALL_LAYERS = ("namespaces", "uid", "rlimits", "clean-env")
_WHAT_IS_LOST = {
    "namespaces": "bubblewrap namespaces (programs can read world-readable host files, use the "
    "network and leave daemons behind); install it with `apt-get install bubblewrap`",
    "uid": "a per-run unprivileged uid (the process-count limit does not hold for root and "
    "escaped processes cannot be killed by uid)",
}


class IsolationError(RuntimeError):
    """Strict mode is on and a protection layer is missing on this machine."""


@dataclass(frozen=True)
class Isolation:
    """A working configuration found by probing (see ``runner.isolation``)."""

    python: str
    prlimit: str
    bwrap: str | None = None
    setpriv: str | None = None  # set when each run gets its own uid
    kill: str | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        got = ["rlimits", "clean-env"]
        if self.bwrap:
            got.insert(0, "namespaces")
        if self.setpriv:
            got.insert(1 if self.bwrap else 0, "uid")
        return tuple(got)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(layer for layer in ALL_LAYERS if layer not in self.layers)

    def describe_missing(self) -> str:
        return "; ".join(_WHAT_IS_LOST.get(m, m) for m in self.missing)


def which(name: str) -> str | None:
    # Look in the system directories too: the harness may run with a minimal PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")


def python_candidates() -> list[str]:
    """Interpreters to try, system ones first: they live under /usr, which the sandbox binds
    read-only anyway, whereas a venv or pyenv interpreter lives in the project or a home
    directory that must stay invisible. ``PRORL_SANDBOX_PYTHON`` overrides."""
    import sys

    forced = os.environ.get("PRORL_SANDBOX_PYTHON")
    if forced:
        return [forced]
    names = ["/usr/bin/python3", "/usr/local/bin/python3"]
    names.append(os.path.join(sys.base_prefix, "bin", "python3"))
    return [p for p in dict.fromkeys(names) if os.access(p, os.X_OK)]


def _system_binds(python: str) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64", "/lib32", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    real = os.path.realpath(python)
    if not real.startswith("/usr/"):
        # An interpreter outside /usr (e.g. /opt/python): bind only its own prefix.
        prefix = os.path.dirname(os.path.dirname(real))
        args += ["--ro-bind", prefix, prefix]
    return args


def rlimit_args(iso: Isolation, limits: Limits) -> list[str]:
    cpu = max(1, int(limits.cpu_s + 0.999))
    mem = limits.memory_mb << 20
    args = [
        iso.prlimit,
        f"--cpu={cpu}:{cpu + 1}",  # SIGXCPU at the soft limit, SIGKILL one second later
        f"--as={mem}",
        f"--fsize={limits.file_mb << 20}",
        f"--nofile={limits.open_files}",
        "--core=0",
    ]
    if iso.setpriv:
        # The program counts itself; with namespaces bwrap's outer process counts too (the
        # program runs as pid 1 of its namespace, with no init in between).
        args.append(f"--nproc={limits.processes + (1 if iso.bwrap else 0)}")
    return [*args, "--"]


def command(
    iso: Isolation, limits: Limits, box: str, uid: int | None, argv: list[str]
) -> tuple[list[str], str]:
    """The full command line and the working directory for running ``argv`` (paths inside
    ``argv`` refer to ``BOX`` with namespaces, to ``box`` without)."""
    cmd = rlimit_args(iso, limits)
    if iso.setpriv and uid is not None:
        cmd += [iso.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    if not iso.bwrap:
        return cmd + [a.replace(BOX, box) for a in argv], box
    cmd += [iso.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    cmd += [
        "--new-session",
        "--as-pid-1",
        "--clearenv",
        "--json-status-fd",
        "3",
        "--hostname",
        "sandbox",
    ]
    cmd += _system_binds(iso.python)
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    cmd += ["--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
    cmd += ["--ro-bind", box, BOX, "--chdir", BOX]
    for key, value in SAFE_ENV.items():
        cmd += ["--setenv", key, value]
    return cmd + argv, "/"


class UidPool:
    """Hands out uids no other live execution of this process uses; the span is wide, so two
    harness processes colliding is unlikely (and would only share a process budget)."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._lock = threading.Lock()
        self._rng = random.SystemRandom()

    def take(self) -> int:
        with self._lock:
            while True:
                uid = _UID_BASE + self._rng.randrange(_UID_SPAN)
                if uid not in self._used:
                    self._used.add(uid)
                    return uid

    def give_back(self, uid: int) -> None:
        with self._lock:
            self._used.discard(uid)


def reap_uid(iso: Isolation, uid: int) -> None:
    """Kill every process running as ``uid``: ``kill(-1)`` from a helper with that uid
    reaches exactly the processes it may signal, i.e. those of the same uid. Needed only
    without namespaces (a pid namespace dies with its init)."""
    if not (iso.setpriv and iso.kill):
        return
    helper = [iso.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    subprocess.run(
        [*helper, iso.kill, "-KILL", "-1"],
        env=SAFE_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=10,
        check=False,
    )


def strict_from_env() -> bool:
    return os.environ.get("PRORL_SANDBOX_STRICT", "").lower() in ("1", "true", "yes")
