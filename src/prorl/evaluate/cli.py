"""``prorl eval`` and ``prorl report``: argument parsing and error reporting only.

Bad input (unknown task, unloadable model, conflicting settings, empty directory) prints one
line ``prorl <cmd>: error: ...`` on stderr and returns exit status 2; results already stored
are never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prorl.evaluate.passk import DEFAULT_THRESHOLD, parse_ks

EXIT_BAD_INPUT = 2


def add_parsers(subparsers: Any) -> None:
    """Add the ``eval`` and ``report`` subcommands to an argparse subparsers object."""
    ev = subparsers.add_parser(
        "eval",
        help="sample n answers per problem, score and store them (resumable)",
        description="Generate n samples per held-out problem with each model, score them "
        "with the task verifiers and store every sample under --out. Rerunning with the "
        "same --out resumes: finished problems are not generated again.",
    )
    ev.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[LABEL=]MODEL",
        help="tiny, smollm2-135m, an HF folder, a .gguf file or a prorl run "
        "directory; repeat for several (the first is the base)",
    )
    ev.add_argument(
        "--tasks",
        default=None,
        help="comma-separated task names, e.g. "
        "rg/leg_counting,rg/basic_arithmetic (see `prorl tasks`); with --task-config, "
        "the subset of its tasks to evaluate",
    )
    ev.add_argument(
        "--task-config",
        default=None,
        metavar="PRESET_OR_YAML",
        help="take the tasks with their settings from a preset or YAML config: its "
        "data.tasks and data.val_tasks (e.g. cpu-boundary)",
    )
    ev.add_argument("--out", required=True, type=Path, help="results directory")
    ev.add_argument("--n", type=int, default=64, help="samples per problem (default 64)")
    ev.add_argument("--k", default=None, help="k values, e.g. 1,2,4,8 (default: powers of 2 to n)")
    ev.add_argument("--split", default="test", help="held-out split: test (default) or val")
    ev.add_argument(
        "--problems", type=int, default=None, help="problems per task (default: the whole split)"
    )
    ev.add_argument("--temperature", type=float, default=0.6)
    ev.add_argument("--top-p", type=float, default=0.95)
    ev.add_argument("--max-new-tokens", type=int, default=512)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="reward at which a sample counts as a success for pass@k (default 1.0)",
    )
    ev.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    ev.add_argument("--chunk", type=int, default=4, help="problems per generate call / write")
    ev.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    ev.add_argument(
        "--verify-timeout",
        type=float,
        default=10.0,
        help="seconds a verifier may take per response (default 10)",
    )
    ev.add_argument(
        "--bf16-autocast",
        action="store_true",
        help="sample under CPU bf16 autocast (off by default: it decoded ~3x slower here)",
    )
    ev.add_argument(
        "--sampler",
        choices=("hf", "vllm"),
        default="hf",
        help="hf (default) or vllm (needs the vllm extra; several times faster, docs/vllm.md)",
    )
    ev.add_argument(
        "--device",
        default="auto",
        help="where the HF sampler runs: auto (default: the first GPU if any, else the CPU), "
        "cpu, cuda or cuda:N",
    )
    ev.add_argument(
        "--self-check",
        choices=("strict", "exclude", "skip"),
        default="strict",
        help="before any model loads, check that each task scores its reference 1 and "
        "trivial responses 0: strict (default) stops on a failing task, exclude leaves it "
        "out with a warning, skip checks nothing",
    )
    ev.add_argument("--report", action="store_true", help="also write the report when done")
    ev.set_defaults(func=run_eval)

    rep = subparsers.add_parser(
        "report",
        help="write report.html and summary.md from stored evaluation results",
        description="Analyse stored results (pass@k curves with bootstrap intervals, "
        "comparisons, regimes, distribution shifts) into a self-contained HTML report and "
        "a Markdown summary, written next to the results.",
    )
    rep.add_argument("dir", type=Path, help="an evaluation directory, or a run directory")
    rep.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="success threshold (default: the one stored by prorl eval)",
    )
    rep.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    rep.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    rep.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="smallest change in pass@k that counts for the regime rule",
    )
    rep.add_argument(
        "--models",
        default=None,
        help="comma-separated model labels to compare, in order (first = base, last = "
        "final; default: every model in evaluation order)",
    )
    rep.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write report.html, summary.md and summary.json here (default: DIR's "
        "evaluation directory)",
    )
    rep.set_defaults(func=run_report)


def _error(cmd: str, message: str) -> int:
    print(f"prorl {cmd}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def configured_tasks(preset: str, names: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tasks by name, their settings by name) from a config's data.tasks + data.val_tasks,
    restricted to ``names`` when given; a name the config lacks is an error."""
    from prorl.config import load_config
    from prorl.tasks import build_tasks

    data = load_config(preset).data
    specs = {s.name: s for s in (*data.tasks, *data.val_tasks)}
    missing = [n for n in names or [] if n not in specs]
    if missing:
        raise ValueError(
            f"--tasks {', '.join(missing)} not in {preset}'s data.tasks or data.val_tasks "
            f"(it has {', '.join(specs)})"
        )
    chosen = [specs[n] for n in names] if names else list(specs.values())
    return build_tasks(chosen), {s.name: dict(s.settings) for s in chosen}


def run_eval(args: argparse.Namespace) -> int:
    from prorl.evaluate.runner import EvalSettings, parse_tasks, run_evaluation

    try:
        names = parse_tasks(args.tasks) if args.tasks is not None else None
        tasks: Any
        task_settings: dict[str, Any] | None
        if args.task_config is not None:
            tasks, task_settings = configured_tasks(args.task_config, names)
        elif names is None:
            raise ValueError("give --tasks NAMES or --task-config PRESET_OR_YAML")
        else:
            tasks, task_settings = names, None
        settings = EvalSettings(
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            split=args.split,
            problems=args.problems,
            seed=args.seed,
            chunk=args.chunk,
        )
        ks = parse_ks(args.k, args.n) if args.k else None
        if not 0.0 < args.threshold <= 1.0:
            raise ValueError(f"--threshold must lie in (0, 1], got {args.threshold}")
        new = run_evaluation(
            args.model,
            tasks,
            args.out,
            settings,
            ks=ks,
            threshold=args.threshold,
            dtype=args.dtype,
            batch_size=args.batch_size,
            bf16=args.bf16_autocast,
            sampler=args.sampler,
            device=args.device,
            verify_timeout_s=args.verify_timeout,
            self_check=args.self_check,
            task_settings=task_settings,
        )
    except ValueError as e:  # includes UnknownTaskError, ModelLoadError and ConfigError
        return _error("eval", str(e))
    print(f"stored in {args.out}: " + ", ".join(f"{m}: {c} new problems" for m, c in new.items()))
    _print_table(args.out)
    if args.report:
        return run_report(
            argparse.Namespace(dir=args.out, threshold=None, bootstrap=1000, seed=0, tolerance=0.02)
        )
    print(f"next: prorl report {args.out}")
    return 0


def _print_table(directory: Path) -> None:
    """pass@1 (success rate), mean reward, null floor and pass@k_max per model and task."""
    from prorl.evaluate.analysis import (
        COL_MEAN_REWARD,
        COL_PASS1,
        FLOOR_NAMES,
        load_results,
        per_problem,
        task_floor,
    )

    res = load_results(directory)
    kmax = res.ks[-1]
    print(
        f"{'model':<24} {'task':<32} {'problems':>8} {'pass@1':>7} {'mean reward':>11} "
        f"{'floor':>18} {'pass@' + str(kmax):>9}"
    )
    for (model, task), tr in res.data.items():
        v = per_problem(tr, res.ks, res.threshold).mean(axis=0)
        f = task_floor(tr, res.threshold)
        floor = "-" if f is None else f"{100 * f.value:.1f}% ({FLOOR_NAMES[f.policy]})"
        print(
            f"{model:<24} {task:<32} {len(tr.uids):>8} {100 * v[COL_PASS1]:>6.1f}% "
            f"{100 * v[COL_MEAN_REWARD]:>10.1f}% {floor:>18} {100 * v[-1]:>8.1f}%"
        )
    print(
        f"pass@1 = success rate (reward >= {res.threshold:g}); mean reward = average reward "
        "(partial credit); floor = best trivial response's success rate ('-': not stored)"
    )


def _labels(spec: str | None) -> list[str] | None:
    return [m.strip() for m in spec.split(",") if m.strip()] or None if spec else None


def run_report(args: argparse.Namespace) -> int:
    from prorl.evaluate.report import write_report

    try:
        if args.bootstrap < 1:
            raise ValueError(f"--bootstrap must be >= 1, got {args.bootstrap}")
        html_path, md_path = write_report(
            args.dir,
            threshold=args.threshold,
            n_boot=args.bootstrap,
            seed=args.seed,
            tolerance=args.tolerance,
            models=_labels(getattr(args, "models", None)),
            out=getattr(args, "out", None),
        )
    except ValueError as e:
        return _error("report", str(e))
    print(f"wrote {html_path}\nwrote {md_path}\nwrote {md_path.with_name('summary.json')}")
    return 0
