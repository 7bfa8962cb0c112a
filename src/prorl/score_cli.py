"""``prorl score``: score one response exactly as training would, and print one JSON object.

The response goes through ``VerifierPool`` (a worker process with the same hard deadline
training uses), so what this prints is what the trainer would have seen, including TIMEOUT.
Exit codes: 0 scored (any reward), 1 the harness failed (INFRA_ERROR), 2 bad input.
No torch here: the command answers in about a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from prorl.types import Example

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Add the ``score`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "score",
        help="score one response with a task's verifier, as training does",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--task", required=True, help="task name, e.g. math-gen or rg/leg_counting")
    p.add_argument(
        "--answer",
        required=True,
        help="reference answer (structured references, e.g. code tests, as a JSON string)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--response", help="the model's response text")
    src.add_argument("--response-file", help="file holding the response ('-' for stdin)")
    p.add_argument("--verifier", help="score with this registered verifier instead of the task's")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds (default 10)")
    p.add_argument("--meta", help="JSON object passed as example.meta")
    p.set_defaults(func=run)


class _InputError(ValueError):
    pass


def _read_response(args: argparse.Namespace) -> str:
    if args.response is not None:
        return str(args.response)
    try:
        if args.response_file == "-":
            return sys.stdin.read()
        with open(args.response_file, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise _InputError(f"cannot read response file {args.response_file!r}: {e}") from e


def _parse_meta(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise _InputError(f"--meta is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise _InputError("--meta must be a JSON object")
    return meta


def _task_verifier_name(task: str) -> str:
    from prorl.tasks import list_tasks

    prefix = task.partition("/")[0]
    for info in list_tasks():
        if info.name in (task, prefix):
            return info.verifier or f"task:{task}"
    return f"task:{task}"


def _scorer(args: argparse.Namespace) -> tuple[Any, str]:
    """(scorer, verifier label); raises _InputError for an unknown task or verifier."""
    from prorl.scoring import ScoreTarget, resolve_scorer
    from prorl.tasks import get_task

    if args.verifier:
        try:
            return resolve_scorer(ScoreTarget.verifier(args.verifier)), args.verifier
        except ValueError as e:
            raise _InputError(str(e)) from e
    try:
        get_task(args.task)  # validates the name and default settings here, not in a worker
    except (ValueError, TypeError) as e:
        hint = "" if "unknown task" in str(e) else " (tasks that need settings: use --verifier)"
        raise _InputError(f"{e}{hint}") from e
    return ScoreTarget.task(args.task), _task_verifier_name(args.task)


def run(args: argparse.Namespace) -> int:
    """Score ``args.response`` against ``args.answer``; print one JSON object on stdout."""
    from prorl.scoring import VerifierPool

    try:
        if not args.timeout > 0:
            raise _InputError(f"--timeout must be > 0, got {args.timeout}")
        response = _read_response(args)
        meta = _parse_meta(args.meta)
        scorer, verifier = _scorer(args)
    except _InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    example = Example(uid="cli:0", task=args.task, prompt=(), answer=args.answer, meta=meta)
    t0 = time.monotonic()
    with VerifierPool(max_workers=1, timeout_s=args.timeout) as pool:
        (score,) = pool.score(scorer, [response], [example])
    result = {
        "task": args.task,
        "verifier": verifier,
        "reward": score.reward,
        "reason": score.reason,
        "details": dict(score.details),
        "elapsed_s": round(time.monotonic() - t0, 3),
    }
    print(json.dumps(result, default=repr))
    return 1 if score.is_infra_error else 0
