"""Code verifier: run the response's program against test cases in the sandbox.

The solution is the last fenced code block (after any ``</think>``). Reward is the fraction
of test cases passed (all cases run), 1/0 for assertion tests, 0 on a syntax error or when a
the whole run exceeds its time limit. Three test formats:

- stdin/stdout: ``{"inputs": [...], "outputs": [...]}`` (APPS, TACO, Eurus-2);
- call-based: ``{"fn_name": ..., "inputs": [[args...], ...], "outputs": [...]}``;
- assertions: ``{"test": code, "entry_point": name}`` (HumanEval's ``check(candidate)``) or
  ``{"test_list": ["assert ...", ...]}`` (MBPP), optionally ``test_setup_code``/``test_imports``.

Every verdict is decided here, in the trainer's process, from plain data the sandbox sends
back (docs/sandbox.md): never from the program's exit code or printed text.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from prorl import sandbox
from prorl.sandbox import driver
from prorl.types import Example, Score
from prorl.verify.registry import register_verifier

_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_MAX_CODE = 200_000
_FAIL_ORDER = ("MEMORY", "OUTPUT_LIMIT", "RUNTIME_ERROR")


@dataclass(frozen=True)
class Tests:
    kind: str  # "stdio" | "call" | "assert"
    inputs: tuple[Any, ...] = ()
    outputs: tuple[Any, ...] = ()
    fn_name: str = ""
    test_code: str = ""
    entry_point: str = ""


def extract_code(response: str) -> str | None:
    """The last fenced code block after any ``</think>``, or None."""
    blocks = _FENCE.findall(response.rsplit("</think>", 1)[-1])
    return blocks[-1] if blocks else None


def parse_tests(tests: dict[str, Any] | str) -> Tests:
    """Normalise a test specification; ``ValueError`` names what is wrong with it."""
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as e:
            raise ValueError(f"code tests are not valid JSON: {e}") from e
    if not isinstance(tests, dict):
        raise ValueError(f"code tests must be a JSON object, got {type(tests).__name__}")
    if "test" in tests or "test_list" in tests or "asserts" in tests:
        lines = tests.get("test_list") or tests.get("asserts") or []
        parts = [*tests.get("test_imports", []), tests.get("test_setup_code", "")]
        code = "\n".join([*parts, str(tests.get("test", "")), *map(str, lines)])
        if not code.strip():
            raise ValueError("assertion tests are empty")
        return Tests("assert", test_code=code, entry_point=str(tests.get("entry_point") or ""))
    inputs, outputs = tests.get("inputs"), tests.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs:
        raise ValueError("code tests need non-empty 'inputs' and 'outputs' lists (or 'test')")
    if len(inputs) != len(outputs):
        raise ValueError(f"code tests have {len(inputs)} inputs but {len(outputs)} outputs")
    if tests.get("fn_name"):
        return Tests("call", tuple(inputs), tuple(outputs), fn_name=str(tests["fn_name"]))
    return Tests("stdio", tuple(map(_text, inputs)), tuple(map(_text, outputs)))


def score_code(
    response: str,
    tests: dict[str, Any] | str,
    timeout_s: float = 5.0,
    limits: sandbox.Limits | None = None,
) -> Score:
    """Score ``response`` on ``tests``; never raises on model output. Bad test data or a
    harness failure gives reason INFRA_ERROR (excluded from training, not a wrong answer).
    ``formatted`` is False (reason ``format``) when there is no non-empty fenced program that
    compiles."""
    code = extract_code(response)
    if code is None:
        return Score(0.0, "format", {"error": "no fenced code block"}, formatted=False)
    if len(code) > _MAX_CODE:
        return Score(0.0, "format", {"error": "program too long"}, formatted=False)
    if not code.strip():  # the format around nothing: no answer was given
        return Score(0.0, "format", {"error": "empty code block"}, formatted=False)
    try:
        compile(code, "solution.py", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
        return Score(0.0, "format", {"error": f"syntax error: {e}"[:300]}, formatted=False)
    return replace(_score_program(code, tests, timeout_s, limits), formatted=True)


def _score_program(
    code: str, tests: dict[str, Any] | str, timeout_s: float, limits: sandbox.Limits | None
) -> Score:
    try:
        spec = parse_tests(tests)
    except ValueError as e:
        return Score(0.0, "INFRA_ERROR", {"error": str(e)})
    limits = limits or sandbox.Limits(cpu_s=timeout_s, wall_s=timeout_s, stdout_bytes=4 << 20)
    budget = _Budget(time.monotonic() + limits.wall_s, limits)
    try:
        if spec.kind == "stdio":
            return _score_stdio(code, spec, budget)
        if spec.kind == "call":
            return _score_call(code, spec, budget)
        return _score_assert(code, spec, budget)
    except sandbox.IsolationError:
        raise  # strict mode: a missing isolation layer is meant to stop the run
    except Exception as e:  # a harness bug must not look like a wrong answer
        return Score(0.0, "INFRA_ERROR", {"error": repr(e)[:300]})


class _Budget:
    """The whole run's deadline: each sandbox run gets only the time that is left, so a
    score never takes much longer than ``timeout_s`` (the verifier pool's deadline is near)."""

    def __init__(self, deadline: float, limits: sandbox.Limits) -> None:
        self.deadline, self.limits = deadline, limits

    def run(self, program: str, stdin: str, files: dict[str, str] | None = None) -> sandbox.Verdict:
        left = self.deadline - time.monotonic()
        if left <= 0.01:
            return sandbox.Verdict("TIMEOUT", detail="the whole run's time limit was used up")
        limits = replace(self.limits, wall_s=left, cpu_s=min(self.limits.cpu_s, left))
        return sandbox.run(program, stdin, limits, files)


def _score_stdio(code: str, spec: Tests, budget: _Budget) -> Score:
    workers = min(len(spec.inputs), os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="prorl-code") as pool:
        verdicts = list(pool.map(lambda stdin: budget.run(code, stdin), spec.inputs))
    passed = [
        v.ok and same_output(v.stdout, o) for v, o in zip(verdicts, spec.outputs, strict=True)
    ]
    return _fraction(passed, [v.status for v in verdicts])


def _score_call(code: str, spec: Tests, budget: _Budget) -> Score:
    job = {"mode": "call", "fn_name": spec.fn_name, "inputs": list(spec.inputs)}
    v = budget.run(_driver_source(), json.dumps(job), {"solution.py": code})
    results: dict[int, Any] = {}
    for rec in _records(v.stdout):
        i = rec.get("i")
        if isinstance(i, int) and 0 <= i < len(spec.inputs) and i not in results:
            results[i] = ("r", driver.decode(rec["r"])) if "r" in rec else ("e", None)
    passed = []
    for i, expected in enumerate(spec.outputs):
        kind, got = results.get(i, ("e", None))
        passed.append(kind == "r" and (same_value(got, expected) or same_value([got], expected)))
    status = v.status if v.status != "OK" or len(results) == len(spec.inputs) else "RUNTIME_ERROR"
    return _fraction(passed, [status] * len(passed))


def _score_assert(code: str, spec: Tests, budget: _Budget) -> Score:
    names = _called_names(code, spec.test_code, spec.entry_point)
    if spec.entry_point and spec.entry_point not in names:
        return Score(0.0, "wrong", {"error": f"the solution defines no {spec.entry_point}()"})
    base = {"test": spec.test_code, "entry_point": spec.entry_point, "names": names, "seed": 0}
    rec = budget.run(
        _driver_source(), json.dumps({**base, "mode": "record"}), {"solution.py": code}
    )
    if rec.status in ("TIMEOUT", "INFRA_ERROR", "OUTPUT_LIMIT"):
        return _fraction([False], [rec.status])
    records = [r for r in _records(rec.stdout) if r.get("n") in names]
    nonce = secrets.token_hex(16)
    replay_job = {**base, "mode": "replay", "records": records, "nonce": nonce}
    # The replay runs no model code and gets its own full budget.
    rep = sandbox.run(_driver_source(), json.dumps(replay_job), budget.limits)
    if rep.status in ("TIMEOUT", "INFRA_ERROR"):
        # The replay runs no model code: its failure is the harness's or the test's.
        return Score(0.0, "INFRA_ERROR", {"error": f"replay {rep.status}: {rep.stderr[-300:]}"})
    ok = rep.ok and any(r.get("ok") == nonce for r in _records(rep.stdout))
    # A failed assertion in the clean replay is a wrong answer; a crash or memory blow-up of
    # the solution during recording keeps its own reason.
    wrong = rec.ok or "AssertionError" in rep.stderr[-2000:]
    return _fraction([ok], ["OK" if wrong and rec.status != "MEMORY" else rec.status])


def _fraction(passed: list[bool], statuses: list[str]) -> Score:
    details = {"passed": sum(passed), "total": len(passed), "statuses": statuses}
    if "INFRA_ERROR" in statuses:
        return Score(0.0, "INFRA_ERROR", details)
    if "TIMEOUT" in statuses:
        return Score(0.0, "TIMEOUT", details)
    reward = sum(passed) / len(passed)
    if reward >= 1.0:
        return Score(1.0, "ok", details)
    failed = {s for s, p in zip(statuses, passed, strict=True) if not p}
    reason = next((s for s in _FAIL_ORDER if s in failed), "wrong")
    return Score(reward, reason, details)


def _records(channel: str) -> list[dict[str, Any]]:
    out = []
    for line in channel.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _called_names(code: str, test_code: str, entry_point: str) -> list[str]:
    """Top-level names the solution defines that the test uses (and doesn't define)."""
    defined = {
        n.name
        for n in ast.parse(code).body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    try:
        test = ast.parse(test_code)
    except SyntaxError:
        return sorted(defined & {entry_point})
    own = {n.name for n in test.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    used = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)} - own
    return sorted((defined & used) | (defined & {entry_point}))


def same_output(got: str, expected: str) -> bool:
    """Whitespace-insensitive token comparison; numeric tokens match within 1e-6."""
    a, b = got.split(), expected.split()
    return len(a) == len(b) and all(
        x == y or _close_tokens(x, y) for x, y in zip(a, b, strict=True)
    )


def _close_tokens(x: str, y: str) -> bool:
    try:
        fx, fy = float(x), float(y)
    except ValueError:
        return False
    return math.isfinite(fx) and math.isclose(fx, fy, rel_tol=1e-6, abs_tol=1e-6)


def same_value(got: Any, expected: Any) -> bool:
    """Equality of plain values from JSON: tuples equal lists, floats within 1e-6, and a
    bool never equals an int."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(got, float) or isinstance(expected, float):
        return (
            isinstance(got, int | float)
            and isinstance(expected, int | float)
            and math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-6)
        )
    if isinstance(got, list | tuple) and isinstance(expected, list | tuple):
        return len(got) == len(expected) and all(map(same_value, got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same_value(got[k], expected[k]) for k in got)
    return type(got) is type(expected) and bool(got == expected)


def _text(x: Any) -> str:
    return "\n".join(map(str, x)) if isinstance(x, list) else str(x)


@cache
def _driver_source() -> str:
    return Path(driver.__file__).read_text(encoding="utf-8")


@register_verifier("code")
def verify_code(response: str, example: Example) -> Score:
    """Tests come from ``example.meta["tests"]`` or the JSON in ``example.answer``."""
    tests = example.meta.get("tests") or example.answer
    return score_code(response, tests, float(example.meta.get("timeout_s", 5.0)))
