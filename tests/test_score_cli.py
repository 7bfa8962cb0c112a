"""`prorl score`: one JSON object through the same VerifierPool path as training."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from prorl.score_cli import add_parser, run


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    code = run(parser.parse_args(["score", *argv]))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


def test_task_scores_equivalent_answer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        ["--task", "math-gen", "--answer", "3/2", "--response", "so \\boxed{1.5}"], capsys
    )
    assert code == 0 and err == ""
    assert (out["task"], out["verifier"], out["reward"], out["reason"]) == (
        "math-gen",
        "math",
        1.0,
        "ok",
    )
    assert out["elapsed_s"] > 0


def test_verifier_override_and_response_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "response.txt"
    f.write_text("Thinking...\nAnswer: (C)\n")
    code, out, _ = _run(
        ["--task", "stem-gen", "--verifier", "stem_mc", "--answer", "B", "--response-file", str(f)],
        capsys,
    )
    assert code == 0 and (out["verifier"], out["reward"], out["reason"]) == (
        "stem_mc",
        0.0,
        "wrong",
    )


def test_hang_is_a_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        [
            "--task",
            "math-gen",
            "--answer",
            "3",
            "--response",
            "\\boxed{5^{5^{5^5}}}",
            "--timeout",
            "1",
        ],
        capsys,
    )
    assert code == 0 and (out["reward"], out["reason"]) == (0.0, "TIMEOUT")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "no-such-task", "--answer", "1", "--response", "x"], "unknown task"),
        (["--task", "math-gen", "--verifier", "nope", "--answer", "1", "--response", "x"], "nope"),
        (
            ["--task", "math-gen", "--answer", "1", "--response-file", "/no/such/file"],
            "cannot read",
        ),
        (
            ["--task", "math-gen", "--answer", "1", "--response", "x", "--meta", "[1]"],
            "JSON object",
        ),
        (["--task", "math-gen", "--answer", "1", "--response", "x", "--timeout", "0"], "--timeout"),
    ],
)
def test_bad_input_is_one_error_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == {}
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_module_entry_prints_exactly_one_json_line() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prorl.cli",
            "score",
            "--task",
            "stem-gen",
            "--answer",
            "D",
            "--response",
            "\\boxed{D}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["reward"] == 1.0
