"""Weaker machines: without bubblewrap the sandbox says so once, still limits and reaps,
and strict mode makes the missing layer fatal."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from prorl import sandbox as sb

L = sb.Limits(cpu_s=1, wall_s=1.5, processes=8)


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PRORL_SANDBOX_NO_BWRAP", "1")
    sb.active_isolation(refresh=True)
    yield
    monkeypatch.delenv("PRORL_SANDBOX_NO_BWRAP")
    sb.configure(strict=None)
    sb.active_isolation(refresh=True)


def test_missing_layer_is_reported_once(no_bwrap: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="prorl.sandbox"):
        iso = sb.active_isolation(refresh=True)
        sb.run("print(1)", limits=L)
        sb.run("print(2)", limits=L)
    assert "namespaces" in iso.missing
    warnings = [r for r in caplog.records if "WITHOUT" in r.getMessage()]
    assert len(warnings) == 1 and "bubblewrap" in warnings[0].getMessage()


def test_strict_mode_makes_it_fatal(no_bwrap: None) -> None:
    sb.configure(strict=True)
    with pytest.raises(sb.IsolationError, match="bubblewrap"):
        sb.run("print(1)", limits=L)


@pytest.mark.skipif(os.geteuid() != 0, reason="per-run uids need root")
def test_fallback_still_limits_processes_and_reaps_daemons(no_bwrap: None) -> None:
    mark = f"prorl{uuid.uuid4().hex[:12]}"
    prog = (
        "import os, time\nn = 0\nfor _ in range(50):\n    try:\n        if os.fork() == 0:\n"
        f"            os.setsid(); os.execv('/bin/sh', ['sh', '-c', 'sleep 30; : {mark}'])\n"
        "        n += 1\n    except OSError: break\nprint(n)"
    )
    verdict = sb.run(prog, limits=L)
    assert verdict.status == "OK" and int(verdict.stdout) < L.processes
    assert "uid" in verdict.isolation and "namespaces" not in verdict.isolation
    leftovers = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                leftovers += [pid] if mark.encode() in fh.read() else []
        except OSError:
            pass
    assert leftovers == []
