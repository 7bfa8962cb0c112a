"""Question-blind guessing floor for pass@k on tasks with short numeric answers.

A model that writes a different number in each of its k samples will hit the right one on
small-range tasks without reading the question. This script asks how much of a model's
pass@k such a guesser gets: for problem i it draws answers from the model's own final
numbers on the task's *other* problems (the last number of each response, as the lenient
reading does), so success has probability p_i = share of those answers equal to problem
i's answer, and blind pass@k = mean over problems of 1 - (1 - p_i)^k. A pass@k at or below
its blind floor says nothing about reasoning.

    python scripts/blind_guess.py ~/prorl-runs/cpu-boundary/eval --models base,step_000200 \
        --tasks rg/leg_counting,rg/chain_sum

Reads the stored rows of `prorl eval` (results/MODEL/TASK.jsonl with sample texts); a model
or task whose file is missing or incomplete is skipped with a note. Prints, per (task,
model): how often the last-number reading agrees with the stored reward, pass@k, and the
blind floor at k (prorl.evaluate.blind). `prorl report` shows the same floor, with an
interval, in its section "Lenient pass@k against the question-blind guessing floor".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prorl.evaluate import store
from prorl.evaluate.blind import blind_pass_at_k
from prorl.verify.lenient import as_number, last_number


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--models", required=True, help="comma-separated model labels")
    ap.add_argument("--tasks", required=True, help="comma-separated task names")
    ap.add_argument("--k", type=int, default=128)
    args = ap.parse_args()
    for task in args.tasks.split(","):
        for model in args.models.split(","):
            path = store.results_path(args.eval_dir, model, task)
            if not path.exists():
                print(f"{task} {model}: no {path}", file=sys.stderr)
                continue
            rows = store.read_rows(path)
            refs = [as_number(str(r["answer"])) for r in rows]
            if any(ref is None for ref in refs):
                print(f"{task}: answers are not all numbers; skipped", file=sys.stderr)
                break
            answers = [[last_number(s["text"]) for s in r["samples"]] for r in rows]
            pairs = [
                (a == ref, s["reward"] >= 1)
                for r, per, ref in zip(rows, answers, refs, strict=True)
                for s, a in zip(r["samples"], per, strict=True)
            ]
            agree = sum(x == y for x, y in pairs) / len(pairs)
            solved = sum(any(s["reward"] >= 1 for s in r["samples"]) for r in rows) / len(rows)
            blind = blind_pass_at_k(answers, [ref for ref in refs if ref is not None], args.k)
            print(
                f"{task:20s} {model:12s} problems={len(rows):3d} reading-agrees={agree:.3f} "
                f"pass@{args.k}={100 * solved:5.1f} blind@{args.k}={100 * blind:5.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
