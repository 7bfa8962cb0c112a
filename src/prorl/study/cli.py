"""``prorl reproduce [STUDY]``: argument parsing and error reporting for studies."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prorl.config import ConfigError

DEFAULT_STUDY = "cpu-boundary"


def add_parser(subparsers: Any) -> None:
    from prorl.study.run import PARTS

    rep = subparsers.add_parser(
        "reproduce",
        help="run a study (default cpu-boundary): screen, base eval, training, checkpoint "
        "evals, ablation, report; resumable",
        description="Run a study's parts in order: "
        + ", ".join(PARTS)
        + ". Each part resumes where it stopped and publishes its small results (reports, "
        "summary.json, metrics) under the study's results directory when it finishes; "
        "finished parts are skipped on a rerun.",
    )
    rep.add_argument("study", nargs="?", default=DEFAULT_STUDY, help="study name or YAML file")
    rep.add_argument("--parts", default=None, help=f"comma-separated subset of {','.join(PARTS)}")
    rep.add_argument("--work", default=None, help="runs and samples go here (default: the study's)")
    rep.add_argument("--results", default=None, help="published results (default: the study's)")
    rep.add_argument("--force", action="store_true", help="rerun parts marked done")
    rep.add_argument(
        "--status",
        action="store_true",
        help="print what is done, published and checkpointed, and the command that goes on; "
        "runs nothing",
    )
    rep.set_defaults(func=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    from prorl.study.config import load_study
    from prorl.study.run import PARTS, PartFailed, StudyRunner

    overrides = {}
    if args.work:
        overrides["work_dir"] = args.work
    if args.results:
        overrides["results_dir"] = args.results
    try:
        study = load_study(args.study, overrides)
        parts = [p.strip() for p in args.parts.split(",")] if args.parts else list(PARTS)
        runner = StudyRunner(study)
        if args.status:
            print("\n".join(runner.status()))
            return 0
        runner.run(parts, force=args.force)
    except (ConfigError, ValueError, PartFailed) as e:
        print(f"prorl reproduce: error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, PartFailed) else 1
    return 0
