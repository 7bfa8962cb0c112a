"""The ``prorl`` command: train | export | eval | report | score | tasks | presets."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any


def _error(message: str, code: int = 2) -> int:
    print(f"prorl: error: {message}", file=sys.stderr)
    return code


def _exit_quietly_on_signal() -> None:
    """After a signal-requested stop the checkpoint is on disk; a second signal during
    interpreter shutdown would print a KeyboardInterrupt traceback from whatever atexit hook
    runs. Exit 130 at once instead: nothing is left to lose."""

    def handler(_signum: int, _frame: Any) -> None:
        sys.stderr.flush()
        os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _leave_if_rollouts_run(code: int) -> None:
    """Stopped at once (a second Ctrl-C) while the rollout thread of asynchronous rollouts
    is still inside a generate call: the run is cleaned up (engine, verifier pool), but the
    interpreter's shutdown beside a thread inside torch can abort the process. Exit now."""
    from prorl.producer import THREAD_NAME

    if any(t.name == THREAD_NAME and t.is_alive() for t in threading.enumerate()):
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)


def cmd_train(args: argparse.Namespace) -> int:
    from prorl.config import ConfigError, load_config, load_run_config
    from prorl.models import ModelLoadError

    overrides = list(args.overrides)
    if args.resume and (args.run_dir or args.preset):
        return _error("--resume RUN_DIR takes the run's own config; drop --run-dir/--preset")
    run_dir = args.resume or args.run_dir
    if run_dir:
        overrides.append(f"run_dir={run_dir}")
    try:
        cfg = (
            load_run_config(args.resume, overrides)
            if args.resume
            else load_config(args.preset, overrides)
        )
    except ConfigError as e:
        return _error(str(e))
    from prorl.checkpoint import CheckpointSaveError
    from prorl.runtime import run_training
    from prorl.scale import LearnerFailed, WorkerStartError
    from prorl.train import TrainingStopped

    try:
        final = run_training(cfg)
    except (ConfigError, ModelLoadError) as e:
        return _error(str(e))
    except (CheckpointSaveError, LearnerFailed, WorkerStartError) as e:
        return _error(str(e), 1)
    except TrainingStopped as e:
        _exit_quietly_on_signal()
        print(f"{e}; continue with: prorl train --resume {cfg.run_dir}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        code = _error("interrupted", 130)
        _leave_if_rollouts_run(code)
        return code
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 reports
        print(final_line(cfg.run_dir, final))
    return 0


def final_line(run_dir: str, final: dict[str, float]) -> str:
    """The last word of ``prorl train``: held-out success before and after with paired
    bootstrap intervals, the gain over the null floor (trivial responses on the same
    problems) and, for numeric tasks, whether training beat what the base model already got
    right when its last number is read as the answer (more than format learning)."""
    from pathlib import Path

    from prorl.evaluate.analysis import load_results
    from prorl.evaluate.change import paired_change

    after = final.get("eval/pass@1")
    if after is None:
        return f"run in {run_dir} (no validation)"
    lines = [f"final validation success rate {after:.3f}"]
    try:
        res = load_results(Path(run_dir) / "eval")
    except ValueError:
        res = None
    base = "step_000000"
    if res is not None and base in res.models and res.models[-1] != base:
        last = res.models[-1]
        change = paired_change(res, base, last)
        if change is not None:
            lines = [
                f"held-out success rate (pass@1; {change.problems} problems of "
                f"{len(change.tasks)} tasks; 95 % paired bootstrap intervals): "
                f"{change.before.text()} -> {change.after.text()}, "
                f"change {change.delta.text(signed=True)}"
            ]
        lenient = paired_change(res, base, last, before_measure="lenient")
        if lenient is not None:
            lines.append(
                f"base's lenient success (its last number read as the answer) "
                f"{lenient.before.text()} on {len(lenient.tasks)} numeric tasks: the trained "
                f"model's success minus it {lenient.delta.text(signed=True)} "
                "(above 0: more than format learning)"
            )
    if "eval/floor" in final:
        lines.append(
            f"null floor (best trivial response) {final['eval/floor']:.3f}; "
            f"gain over it {final['eval/gain']:+.3f}"
        )
    lines.append(f"run in {run_dir}; per-task tables: prorl report {run_dir}")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    from prorl.checkpoint import export

    try:
        ckpt = export(args.run_dir, args.out_dir, args.step)
    except ValueError as e:
        return _error(str(e))
    print(f"exported {ckpt} to {args.out_dir}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    if args.check is not None:
        return cmd_check(args)
    from rich.console import Console
    from rich.table import Table

    from prorl.tasks import list_tasks

    table = Table("task", "domain", "verifier", "description")
    for info in sorted(list_tasks(), key=lambda i: (i.domain, i.name)):
        name = f"{info.name}/<name>" if info.name == "rg" else info.name
        table.add_row(name, info.domain, info.verifier, info.description)
    Console().print(table)
    if args.all_rg:
        from prorl.tasks.reasoning_gym import OOD_TASKS, available_datasets

        for name in available_datasets():
            print(f"rg/{name}" + ("  (held-out OOD set)" if name in OOD_TASKS else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``prorl tasks --check [TASK ...]``: a verdict line per task; exit 1 when any fails."""
    from prorl.config import ConfigError, load_config
    from prorl.stages import all_tasks
    from prorl.tasks import get_task
    from prorl.tasks.selfcheck import CheckResult, check_task, default_check_names

    if args.problems < 1:
        return _error(f"--problems must be >= 1, got {args.problems}")
    try:
        if args.preset:  # the preset's tasks with their settings
            cfg = load_config(args.preset)
            specs = [*all_tasks(cfg), *cfg.data.val_tasks]
            named = {s.name: s.settings for s in specs}
        else:
            named = {name: {} for name in (args.check or default_check_names())}
    except ConfigError as e:
        return _error(str(e))
    failed = 0
    for name, settings in named.items():
        try:
            result = check_task(get_task(name, **settings), args.problems)
        except ValueError as e:  # unknown task, bad settings, a dataset refused
            result = CheckResult(name, 0, 0, error=str(e))
        print(result.verdict(), flush=True)
        failed += not result.ok
    print(f"{len(named) - failed} of {len(named)} tasks passed the self-check")
    return 1 if failed else 0


def cmd_presets(args: argparse.Namespace) -> int:
    from prorl.config import list_presets

    print("\n".join(list_presets()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prorl", description="Prolonged RL with verifiable rewards."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="run ProRL training",
        description="Train a policy with GRPO-style RL. Settings come from a preset and "
        "key=value overrides, e.g. optim.lr=2e-6 rollout.n=8 data.tasks=rg/leg_counting:1",
    )
    train.add_argument("--preset", help="preset name (see `prorl presets`) or a YAML file")
    train.add_argument("--run-dir", help="where metrics, config and checkpoints go")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its newest complete checkpoint, with its own config "
        "(key=value overrides still apply, e.g. steps=400)",
    )
    train.add_argument("overrides", nargs="*", metavar="key=value")
    train.set_defaults(func=cmd_train)

    exp = sub.add_parser(
        "export", help="write a checkpoint's policy as a plain Hugging Face model folder"
    )
    exp.add_argument("run_dir", help="a prorl run directory")
    exp.add_argument("out_dir", help="new (or empty) directory for the model")
    exp.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
    exp.set_defaults(func=cmd_export)

    tasks = sub.add_parser(
        "tasks",
        help="list the registered tasks, or self-check them",
        description="List the tasks. With --check, build problems of each task and check "
        "that its reference answer scores 1 and that trivial responses (empty, format-only, "
        "junk, the prompt echoed back) score 0; exit 1 when a task fails.",
    )
    tasks.add_argument("--all-rg", action="store_true", help="also list every reasoning-gym task")
    tasks.add_argument(
        "--check",
        nargs="*",
        metavar="TASK",
        help="self-check these tasks (default: every built-in task and a sample of "
        "reasoning-gym tasks)",
    )
    tasks.add_argument("--preset", help="with --check: check this preset's tasks and settings")
    tasks.add_argument("--problems", type=int, default=20, help="problems per task (default 20)")
    tasks.set_defaults(func=cmd_tasks)

    presets = sub.add_parser("presets", help="list the configuration presets")
    presets.set_defaults(func=cmd_presets)

    from prorl import score_cli
    from prorl.evaluate import cli as eval_cli
    from prorl.study import cli as study_cli

    eval_cli.add_parsers(sub)
    score_cli.add_parser(sub)
    study_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args: Any = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # SIGTERM stops like Ctrl-C: a job scheduler's kill gets the same clean exit 130
    on_main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler) if on_main_thread else None
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that went away shows here, below, not at exit
        return code
    except KeyboardInterrupt:
        # a signal between two handlers, e.g. a second Ctrl-C after training restored the
        # default handler but before the quiet-exit one is in place: whatever was saved is
        # complete (saves are atomic), so stop cleanly instead of with a traceback
        return _error("interrupted", 130)
    except BrokenPipeError:
        # the reader went away (`prorl presets | head`): stop quietly with status 1, as
        # rich does for the commands that print through it; stdout goes to /dev/null so
        # that the interpreter's last flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        # main() called from Python (tests, notebooks) leaves no trace; the quiet-exit handler
        # of a signal-stopped run stays for the interpreter's shutdown
        if old_term is not None and signal.getsignal(signal.SIGTERM) is signal.default_int_handler:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
