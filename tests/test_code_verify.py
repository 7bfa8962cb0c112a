"""Code verifier and the code-basic task: formats, reward tampering, real sandbox runs."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from prorl.sandbox import driver
from prorl.tasks import get_task
from prorl.types import Example
from prorl.verify import get_verifier
from prorl.verify.code import extract_code, parse_tests, same_output, same_value, score_code

STDIO = {"inputs": ["1 2\n", "3 4\n", "10 -3\n"], "outputs": ["3\n", "7\n", "7\n"]}
CALL = {"fn_name": "add", "inputs": [[1, 2], [3, 4], [10, -3]], "outputs": [3, 7, 7]}
HUMANEVAL = {
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    import random\n"
    "    for _ in range(20):\n        x, y = random.randint(0, 99), random.randint(0, 99)\n"
    "        assert candidate(x, y) == x + y\n",
    "entry_point": "add",
}
MBPP = {"test_list": ["assert add(1, 2) == 3", "assert add(3, 4) == 7"]}
GOOD = "def add(a, b):\n    return a + b"


def fence(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\nDone."


# (name, program, tests, reward, reason): each program cheats or fails in one way.
CASES = [
    ("stdio-good", "a, b = map(int, input().split())\nprint(a + b)", STDIO, 1.0, "ok"),
    (
        "stdio-partial",
        "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)",
        STDIO,
        2 / 3,
        "wrong",
    ),
    ("call-good", GOOD, CALL, 1.0, "ok"),
    (
        "humaneval-good",
        "import random\n" + GOOD.replace("return", "random.random()\n    return"),
        HUMANEVAL,
        1.0,
        "ok",
    ),
    ("mbpp-good", GOOD, MBPP, 1.0, "ok"),
    ("exit0-before-tests", "import os\nos._exit(0)\n" + GOOD, HUMANEVAL, 0.0, "wrong"),
    ("exit0-in-call", "import os\ndef add(a, b):\n    os._exit(0)", CALL, 0.0, "RUNTIME_ERROR"),
    ("exit0-stdio", "import os\nos._exit(0)", STDIO, 0.0, "wrong"),
    (
        "always-equal",
        "class E:\n    def __eq__(s, o): return True\ndef add(a, b): return E()",
        HUMANEVAL,
        0.0,
        "RUNTIME_ERROR",
    ),
    (
        "always-equal-int",
        "class E(int):\n    def __eq__(s, o): return True\ndef add(a, b): return E(0)",
        CALL,
        0.0,
        "wrong",
    ),
    (
        "fake-passed",
        'print(\'PASSED\')\nprint(\'{"ok": "x"}\')\nprint(\'{"i": 0, "r": 3}\')\n'
        "def add(a, b): return 0",
        HUMANEVAL,
        0.0,
        "wrong",
    ),
    ("fake-records", 'print(\'{"i": 0, "r": 3}\')\ndef add(a, b): return 0', CALL, 0.0, "wrong"),
    (
        "patch-assert",
        "import builtins\nbuiltins.AssertionError = KeyError\ndef add(a, b): return 0",
        MBPP,
        0.0,
        "wrong",
    ),
    (
        "patch-checker-random",
        "import random\nrandom.randint = lambda a, b: 0\n"
        "def add(a, b): return a + b if a + b in (3, 7) else 0",
        HUMANEVAL,
        0.0,
        "wrong",
    ),
    (
        "patch-driver",
        "import sys\nd = sys.modules['__main__']\nd.encode = lambda x, depth=0: 3\n"
        "def add(a, b): return 0",
        CALL,
        1 / 3,
        "wrong",
    ),
    ("infinite-loop", "def add(a, b):\n    while True: pass", CALL, 0.0, "TIMEOUT"),
    ("memory-bomb", "x = bytearray(10**11)", STDIO, 0.0, "MEMORY"),
    (
        "fork-bomb",
        "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
        MBPP,
        0.0,
        "TIMEOUT",
    ),
    ("syntax-error", "def add(a, b) return a", CALL, 0.0, "format"),
]


@pytest.fixture(scope="module")
def scored() -> dict[str, object]:
    def one(case: tuple) -> object:
        return score_code(fence(case[1]), case[2], timeout_s=1.5)

    with ThreadPoolExecutor(4) as pool:
        return dict(zip([c[0] for c in CASES], pool.map(one, CASES), strict=True))


@pytest.mark.parametrize("name,reward,reason", [(c[0], c[3], c[4]) for c in CASES])
def test_tampering_and_failures(scored: dict, name: str, reward: float, reason: str) -> None:
    score = scored[name]
    assert score.reward == pytest.approx(reward), score
    assert score.reason == reason, score


def test_no_code_block_is_format() -> None:
    assert score_code("def add(a, b): return a + b", CALL).reason == "format"
    assert score_code("def add(a, b): return a + b", CALL).formatted is False
    assert extract_code("```\nA\n``` text ```py\nB\n```") == "B\n"
    assert extract_code("```python\nwrong\n```</think>no code") is None


@pytest.mark.parametrize(
    ("response", "reason", "formatted"),
    [
        ("no code at all", "format", False),
        ("", "format", False),
        ("```python\n\n```", "format", False),  # the fence around nothing
        ("```python\n   \n```", "format", False),
        ("```python\nxyzzy plover\n```", "format", False),  # does not compile
        ("```python\ndef add(a, b):\n    return 0\n```", "wrong", True),
        ("```python\n" + GOOD + "\n```", "ok", True),
    ],
)
def test_formatted(response: str, reason: str, formatted: bool) -> None:
    score = score_code(response, MBPP, timeout_s=3.0)
    assert (score.reason, score.formatted) == (reason, formatted)


def test_bad_tests_are_infra_errors_not_wrong_answers() -> None:
    for bad in ("not json", '{"inputs": [1]}', '{"inputs": ["1"], "outputs": []}', "[]"):
        score = score_code(fence(GOOD), bad)
        assert score.reason == "INFRA_ERROR" and score.is_infra_error, bad
    with pytest.raises(ValueError, match="inputs"):
        parse_tests({"outputs": []})


def test_output_and_value_comparison() -> None:
    assert same_output("1 2\n3\n\n", "1 2 3")
    assert same_output("0.3333333", "0.33333333") and not same_output("0.34", "0.33")
    assert not same_output("1 2", "1 2 3") and not same_output("nan", "0")
    assert same_value((1, [2.0000000001]), [1, [2]]) and same_value({"a": 1}, {"a": 1})
    assert not same_value(True, 1) and not same_value(1, True) and not same_value("1", 1)


def test_encoding_is_exact_and_round_trips() -> None:
    value = (1, 2**80, float("inf"), {1: {2, 3}}, frozenset({"a"}), b"\x00", 1 + 2j, None, [True])
    assert driver.decode(driver.encode(value)) == value
    assert type(driver.decode(driver.encode(value))[0]) is int

    class Sneaky(int):
        pass

    with pytest.raises(TypeError):
        driver.encode([Sneaky(1)])


def test_registered_verifier_reads_tests_from_example() -> None:
    verify = get_verifier("code")
    ex = Example("u", "t", ({"role": "user", "content": "q"},), answer="", meta={"tests": MBPP})
    assert verify(fence(GOOD), ex).reward == 1.0
    ex2 = Example(
        "u", "t", ({"role": "user", "content": "q"},), answer='{"test_list": ["assert f()"]}'
    )
    assert verify(fence("def f(): return 0"), ex2).reward == 0.0


def test_code_basic_is_deterministic_with_disjoint_splits() -> None:
    task = get_task("code-basic")
    assert task.domain == "code" and task.size("train") == 32 and task.size("val") == 8
    train = {task.example(i, "train").meta["slug"] for i in range(32)}
    val = {task.example(i, "val").meta["slug"] for i in range(8)}
    assert len(train) == 32 and len(val) == 8 and not train & val
    assert task.example(3) == task.example(3) and task.example(35).meta == task.example(3).meta
    assert {task.example(i).meta["format"] for i in range(32)} == {"stdio", "call", "assert"}
    with pytest.raises(IndexError):
        task.example(8, "val")
    assert "```python" in task.example(0).question


def test_code_basic_reference_solutions_all_score_one() -> None:
    task = get_task("code-basic", timeout_s=3.0)
    examples = [task.example(i, s) for s in ("train", "val") for i in range(task.size(s) or 0)]
    with ThreadPoolExecutor(4) as pool:
        scores = list(pool.map(lambda e: task.score(fence(e.meta["reference"]), e), examples))
    bad = [(e.meta["slug"], s) for e, s in zip(examples, scores, strict=True) if s.reward != 1.0]
    assert bad == []
    assert task.score(fence("print('hello')"), examples[0]).reward == 0.0
    assert all(
        task.reference_response(e) == task.format_answer(e.meta["reference"]) for e in examples
    )
    assert task.format_answer("pass") == "```python\npass\n```"


def test_verify_does_not_import_torch() -> None:
    import subprocess

    code = "import prorl.verify.code, prorl.tasks.code, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_time_limit_covers_the_whole_run() -> None:
    # Each case alone is fast enough; together they overrun the run's 1.2 s budget.
    slow = fence("import time\ntime.sleep(0.5)\nprint(input())")
    tests = {"inputs": [f"{i}\n" for i in range(12)], "outputs": [f"{i}\n" for i in range(12)]}
    start = time.monotonic()
    score = score_code(slow, tests, timeout_s=1.2)
    assert (score.reward, score.reason) == (0.0, "TIMEOUT")
    assert time.monotonic() - start < 1.2 + 1.0
    assert score_code(slow, {"inputs": ["7\n"], "outputs": ["7\n"]}, timeout_s=1.2).reward == 1.0
