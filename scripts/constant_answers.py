"""How much of each task's reward one constant answer collects, before any model runs.

A task where most problems share one answer is a reward trap: a policy that gives that
answer to every question collects the reward without reading any question (the
cpu-boundary study's letter_counting run learnt to answer 1 to everything, right on 58 %
of the test problems). For every task of a config's data.tasks + data.val_tasks this
prints the most common reference among the first N problems of a split and the share of
problems it answers (prorl.evaluate.blind.best_constant); tasks whose answers are not all
numbers print '-'.

    python scripts/constant_answers.py boundary-screen --split val --problems 100

`prorl report` shows the same number for evaluated problems ("one answer", beside the
null floor).
"""

from __future__ import annotations

import argparse
import sys

from prorl.evaluate.blind import best_constant
from prorl.evaluate.cli import configured_tasks
from prorl.verify.lenient import as_number


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a preset name or YAML file with data.tasks / val_tasks")
    ap.add_argument("--split", default="val", choices=["train", "val", "test"])
    ap.add_argument("--problems", type=int, default=100, help="first N problems (default 100)")
    args = ap.parse_args(argv)
    if args.problems < 1:
        print("error: --problems must be at least 1", file=sys.stderr)
        return 2
    try:
        tasks, _ = configured_tasks(args.config, None)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'task':24} {'problems':>8} {'one answer %':>12}  answer")
    for name, task in tasks.items():
        size = task.size(args.split)
        n = args.problems if size is None else min(args.problems, size)
        refs = [as_number(str(task.example(i, args.split).answer)) for i in range(n)]
        known = [r for r in refs if r is not None]
        best = best_constant(known) if len(known) == n else None
        if best is None:
            print(f"{name:24} {n:>8} {'-':>12}")
        else:
            print(f"{name:24} {n:>8} {100 * best[1]:>12.1f}  {best[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
