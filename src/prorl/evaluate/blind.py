"""The question-blind guessing floor of pass@k.

On a task whose answers lie in a small range (counts, small sums, angles), a model that
writes a different number in each of its k samples hits the right one without reading the
question, and pass@k at large k rises with the spread of its answers alone. The floor asks
what a guesser that ignores the question would score: for problem i it draws answers from
the model's own final numbers on the task's *other* problems, so one draw succeeds with
probability p_i = (share of those answers equal to problem i's reference), and
blind pass@k = mean over problems of 1 - (1 - p_i)^k (draws with replacement). A pass@k at
or under this floor says nothing about what the model can solve.

The best constant answer is the same question at k = 1 taken to its extreme: the one
answer that, given to every problem, is right most often (the most common reference). A
task where it scores high is a reward trap: a policy can collect that reward without
reading a single question.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

Answer = Fraction | None  # a sample's final number; None when it wrote none


def blind_success_probs(
    answers: Sequence[Sequence[Answer]], refs: Sequence[Fraction]
) -> list[float]:
    """p_i per problem: the share of the other problems' answers equal to ``refs[i]``.

    ``answers[i]`` are problem i's samples' final numbers (None counts as a wrong guess)."""
    if len(answers) != len(refs):
        raise ValueError(f"{len(answers)} answer lists for {len(refs)} references")
    pool = Counter(a for per in answers for a in per)
    total = sum(pool.values())
    probs = []
    for per, ref in zip(answers, refs, strict=True):
        others = total - len(per)
        hits = pool[ref] - Counter(per)[ref]
        probs.append(hits / others if others else 0.0)
    return probs


def floor_at_k(probs: npt.ArrayLike, k: int) -> npt.NDArray[np.float64]:
    """Per problem, the chance that k independent blind guesses include the answer:
    1 - (1 - p_i)^k."""
    return 1.0 - (1.0 - np.asarray(probs, dtype=np.float64)) ** k


def blind_pass_at_k(answers: Sequence[Sequence[Answer]], refs: Sequence[Fraction], k: int) -> float:
    """Mean over problems of 1 - (1 - p_i)^k (see the module docstring)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    probs = blind_success_probs(answers, refs)
    if not probs:
        raise ValueError("no problems")
    return float(np.mean(floor_at_k(probs, k)))


def best_constant(refs: Sequence[Fraction]) -> tuple[Fraction, float] | None:
    """The most common reference and the share of problems it answers; among equally
    common ones, the smallest. None without problems."""
    if not refs:
        return None
    counts = Counter(refs)
    answer = min(counts, key=lambda a: (-counts[a], a))
    return answer, counts[answer] / len(refs)


def constant_answer(refs: Sequence[Fraction | None]) -> tuple[str, float] | None:
    """``best_constant`` with the answer as text, for references read with ``as_number``;
    None when some reference is not a number (None) or there are none."""
    known = [r for r in refs if r is not None]
    if len(known) < len(refs) or (best := best_constant(known)) is None:
        return None
    return str(best[0]), best[1]
