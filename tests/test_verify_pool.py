"""VerifierPool with real worker processes: hangs, crashes, memory bombs, threads.

A plugin module written to a temp dir registers misbehaving verifiers; the pool imports it in
the parent and in every worker (the same mechanism users have for their own verifiers).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prorl.scoring import ScoreTarget, VerifierPool
from prorl.types import Example, Score

DEADLINE = 2.0
PLUGIN = "prorl_pool_test_plugin"
PLUGIN_SOURCE = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    from pathlib import Path
    from prorl.types import Score
    from prorl.verify.registry import register_verifier

    @register_verifier("test_sleep")
    def sleep_forever(response, example):
        time.sleep(10_000)

    @register_verifier("test_crash")
    def crash(response, example):
        os.kill(os.getpid(), signal.SIGKILL)

    @register_verifier("test_crash_once")
    def crash_once(response, example):
        marker = Path(example.answer)
        if not marker.exists():
            marker.write_text("crashed")
            os._exit(3)
        return 1.0

    @register_verifier("test_raise")
    def raise_error(response, example):
        raise RuntimeError("verifier bug")

    @register_verifier("test_memory")
    def memory_bomb(response, example):
        blob = bytearray(8 * 2**30)
        return float(len(blob) > 0)

    @register_verifier("test_grandchild")
    def spawn_and_hang(response, example):
        child = subprocess.Popen(["sleep", "600"])
        Path(example.answer).write_text(str(child.pid))
        time.sleep(10_000)

    @register_verifier("test_env")
    def report_env(response, example):
        return Score(1.0, "ok", {"pid": os.getpid(), "torch": "torch" in sys.modules})
    """
)


def ex(answer: str, task: str = "t") -> Example:
    return Example("u", task, ({"role": "user", "content": "q"},), answer)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifierPool]:
    plugin_dir = tmp_path_factory.mktemp("plugin")
    (plugin_dir / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    sys.path.insert(0, str(plugin_dir))
    with VerifierPool(2, timeout_s=DEADLINE, memory_limit_mb=1024, imports=[PLUGIN]) as p:
        yield p
    sys.path.remove(str(plugin_dir))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie waiting for init to reap it is dead


HANGS = {
    "tower": ("\\boxed{5^{5^{5^5}}}", "3"),
    "nine_tower": ("So \\boxed{9^{9^{9^{9}}}}", "7"),
    "python_power": ("\\boxed{10**10**10}", "3"),
    "deep_parens": ("\\boxed{" + "(" * 10_000 + "1" + ")" * 10_000 + "}", "1"),
    "deep_braces": ("\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}", "1"),
    "megabyte": ("\\boxed{" + "9" * 1_000_000 + "}", "9"),
    "megabyte_unboxed": ("1+" * 500_000, "1"),
}


@pytest.mark.parametrize("case", sorted(HANGS))
def test_adversarial_math_scores_zero_within_twice_the_deadline(
    pool: VerifierPool, case: str
) -> None:
    response, reference = HANGS[case]
    t0 = time.monotonic()
    bad, good = pool.score("math", [response, "\\boxed{\\frac{1}{2}}"], [ex(reference), ex("0.5")])
    wall = time.monotonic() - t0
    assert bad.reward == 0.0 and bad.reason in ("TIMEOUT", "wrong", "format")
    assert good == Score(1.0, "ok", {"extracted": "\\frac{1}{2}"}, formatted=True)
    if bad.reason == "TIMEOUT":
        assert bad.details["elapsed_s"] < 2 * DEADLINE
    # Generous bound: a replacement worker may still be starting on a loaded machine.
    assert wall < 2 * DEADLINE + 10


def test_power_tower_times_out_and_worker_is_replaced(pool: VerifierPool) -> None:
    before = set(pool.worker_pids)
    restarts = pool.total.restarts
    (s,) = pool.score("math", ["\\boxed{5^{5^{5^5}}}"], [ex("3")])
    assert (s.reward, s.reason) == (0.0, "TIMEOUT")
    assert pool.last_batch.timeouts == 1 and pool.total.restarts == restarts + 1
    gone = before - set(pool.worker_pids)
    assert len(gone) == 1 and not _alive(gone.pop())
    # The replacement works.
    assert [x.reward for x in pool.score("math", ["\\boxed{2}"] * 3, [ex("2")] * 3)] == [1.0] * 3


def test_batch_from_a_non_main_thread(pool: VerifierPool) -> None:
    items = [("math", r, ex(a)) for r, a in HANGS.values()]
    items += [("math", f"\\boxed{{{i}}}", ex(str(i))) for i in range(6)]
    out: list[list[Score]] = []
    worker = threading.Thread(target=lambda: out.append(pool.score_batch(items)))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive()
    scores = out[0]
    assert [s.reward for s in scores] == [0.0] * len(HANGS) + [1.0] * 6
    assert {s.reason for s in scores[: len(HANGS)]} <= {"TIMEOUT", "wrong", "format"}
    assert pool.last_batch.timeouts >= 2  # the two towers at least
    assert all(s.details["elapsed_s"] < 2 * DEADLINE for s in scores if s.reason == "TIMEOUT")


def test_python_sleep_is_killed(pool: VerifierPool) -> None:
    scores = pool.score_batch([("test_sleep", "x", ex("1")), ("math", "\\boxed{1}", ex("1"))])
    assert [(s.reward, s.reason) for s in scores] == [(0.0, "TIMEOUT"), (1.0, "ok")]


def test_grandchildren_die_with_the_worker(pool: VerifierPool, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    (s,) = pool.score("test_grandchild", ["x"], [ex(str(pid_file))])
    assert s.reason == "TIMEOUT"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_crashing_worker_is_infra_error_after_one_retry(pool: VerifierPool) -> None:
    scores = pool.score_batch([("test_crash", "x", ex("1")), ("math", "\\boxed{7}", ex("7"))])
    assert (scores[0].reward, scores[0].reason) == (0.0, "INFRA_ERROR")
    assert "died" in scores[0].details["error"]
    assert scores[1].reward == 1.0
    assert pool.last_batch.crashes == 2 and pool.last_batch.infra_errors == 1


def test_a_worker_death_is_retried(pool: VerifierPool, tmp_path: Path) -> None:
    (s,) = pool.score("test_crash_once", ["x"], [ex(str(tmp_path / "marker"))])
    assert (s.reward, s.reason) == (1.0, "ok")
    assert pool.last_batch.crashes == 1


def test_verifier_exception_is_infra_error_not_a_crash(pool: VerifierPool) -> None:
    (s,) = pool.score("test_raise", ["x"], [ex("1")])
    assert s.reason == "INFRA_ERROR" and "verifier bug" in s.details["error"]
    assert pool.last_batch.crashes == 0


def test_memory_bomb_is_memory(pool: VerifierPool) -> None:
    scores = pool.score_batch([("test_memory", "x", ex("1")), ("math", "\\boxed{1}", ex("1"))])
    assert [(s.reward, s.reason) for s in scores] == [(0.0, "MEMORY"), (1.0, "ok")]


def test_workers_are_persistent_and_torch_free(pool: VerifierPool) -> None:
    first = pool.score("test_env", ["a"] * 4, [ex("1")] * 4)
    second = pool.score("test_env", ["a"] * 4, [ex("1")] * 4)
    pids = {s.details["pid"] for s in first + second}
    assert pids <= set(pool.worker_pids) and os.getpid() not in pids
    assert not any(s.details["torch"] for s in first)


def test_scorer_kinds(pool: VerifierPool) -> None:
    mc = pool.score(ScoreTarget.verifier("stem_mc"), ["Answer: B"], [ex("B")])
    fn = pool.score("prorl.verify.math:math_verifier", ["\\boxed{3}"], [ex("3")])
    assert mc[0].reward == fn[0].reward == 1.0


def test_bad_input_raises_before_running(pool: VerifierPool) -> None:
    with pytest.raises(ValueError, match="no-such-verifier"):
        pool.score("no-such-verifier", ["x"], [ex("1")])
    with pytest.raises(ValueError, match="2 responses but 1 examples"):
        pool.score("math", ["a", "b"], [ex("1")])
    with pytest.raises(ValueError, match="timeout_s"):
        VerifierPool(0, timeout_s=0)


def test_metrics_are_flat() -> None:
    with VerifierPool(0) as serial:
        serial.score("math", ["\\boxed{1}", "none"], [ex("1"), ex("1")])
        metrics = serial.total.as_metrics()
    assert metrics["verify/items"] == 2.0 and metrics["verify/timeouts"] == 0.0


def test_serial_mode_matches_the_pool(pool: VerifierPool) -> None:
    items = [("math", "\\boxed{0.5}", ex("\\frac12")), ("stem_mc", "(C)", ex("D"))]
    items.append(("math", "nothing", ex("1")))
    with VerifierPool(max_workers=0) as serial:
        assert serial.score_batch(items) == pool.score_batch(items)


def test_close_stops_workers() -> None:
    p = VerifierPool(1, timeout_s=5)
    assert p.score("math", ["\\boxed{1}"], [ex("1")])[0].reward == 1.0
    (pid,) = p.worker_pids
    p.close()
    assert not _alive(pid)
    with pytest.raises(RuntimeError, match="closed"):
        p.score("math", ["\\boxed{1}"], [ex("1")])


@pytest.mark.parametrize("module", ["prorl.verify", "prorl.tasks", "prorl.scoring"])
def test_import_leaves_torch_out(module: str) -> None:
    code = (
        f"import sys, {module}; from prorl.verify import list_verifiers; "
        "from prorl.tasks import list_tasks; list_verifiers(); list_tasks(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
