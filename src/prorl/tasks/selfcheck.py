"""Task self-checks and the null floor: can a task's score be fooled by a trivial response?

Four trivial policies answer every problem without reading it:

- ``empty``: the empty response;
- ``format``: the task's answer format around nothing (``<answer></answer>``, ``\\boxed{}``);
- ``junk``: the answer format around a fixed junk string;
- ``echo``: the prompt's question copied back.

A sound task scores all four 0, and scores its own reference answer (written in the task's
format) 1 wherever it has a single reference. ``check_task`` tests exactly that on a few
problems; ``prorl tasks --check`` runs it over many tasks, and ``prorl train`` / ``prorl eval``
run it on their own tasks before any model loads. The same trivial responses, scored on the
evaluated problems, give the *null floor* printed beside every score.

For tasks with numeric answers the check also reports the best constant answer: the most
common reference and the share of the checked problems it answers. It is not a failure,
but a high share is a reward trap (a policy can collect it without reading a question).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from prorl.evaluate.blind import constant_answer
from prorl.tasks.base import Task
from prorl.types import Example, Score
from prorl.verify.lenient import as_number
from prorl.verify.registry import as_score

JUNK = "xyzzy plover"  # no task's reference answer is this
TRIVIAL = ("empty", "format", "junk", "echo")
# Tasks whose reward is a test signal, not correctness (toy-even): nothing to check.
UNCHECKED_DOMAINS = ("toy",)


def trivial_responses(task: Task, example: Example) -> dict[str, str]:
    """The four trivial policies' responses to ``example``, by name (see ``TRIVIAL``)."""
    return {
        "empty": "",
        "format": task.format_answer(""),
        "junk": task.format_answer(JUNK),
        "echo": example.question,
    }


@dataclass(frozen=True)
class CheckFailure:
    task: str
    uid: str
    case: str  # "reference" or one of TRIVIAL
    reward: float
    reason: str
    response: str

    def line(self) -> str:
        shown = self.response if len(self.response) <= 60 else self.response[:57] + "..."
        want = "1" if self.case == "reference" else "0"
        return (
            f"{self.task}: the {self.case} response scores {self.reward:.3g} (want {want}) "
            f"on {self.uid} [{self.reason}]: {shown!r}"
        )


@dataclass(frozen=True)
class CheckResult:
    task: str
    problems: int
    references: int  # problems with a single reference answer that was checked
    failures: tuple[CheckFailure, ...] = ()
    error: str = ""  # the task could not be built or its problems could not be made
    skipped: str = ""  # why nothing was checked (e.g. a toy task)
    # the most common reference (numeric answers) and the share of the checked problems it
    # answers: what a policy that never reads the question collects (not a failure: a
    # property of the task's answer distribution, a possible reward trap)
    constant: tuple[str, float] | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.error

    def verdict(self) -> str:
        if self.error:
            return f"FAIL  {self.task}: {self.error}"
        if self.skipped:
            return f"skip  {self.task}: {self.skipped}"
        if self.failures:
            cases = sorted({f.case for f in self.failures})
            return (
                f"FAIL  {self.task}: {len(self.failures)} failing case(s) over {self.problems} "
                f"problems ({', '.join(cases)}); first: {self.failures[0].line()}"
            )
        ref = f", reference scores 1 on {self.references}" if self.references else ""
        one = (
            f"; one answer ({self.constant[0]}) is right on {100 * self.constant[1]:.0f} %"
            if self.constant
            else ""
        )
        return f"ok    {self.task}: {self.problems} problems, trivial responses score 0{ref}{one}"


Scorer = Callable[[Task, Example, Sequence[str]], list[Score]]


def score_in_process(task: Task, example: Example, texts: Sequence[str]) -> list[Score]:
    return [as_score(task.score(t, example)) for t in texts]


def check_task(
    task: Task,
    problems: int = 5,
    split: str = "train",
    scorer: Scorer = score_in_process,
) -> CheckResult:
    """Score the reference and the trivial responses on the first ``problems`` items of
    ``split``; every disagreement with 1 (reference) or 0 (trivial) is a failure."""
    name = task.name
    if getattr(task, "domain", "") in UNCHECKED_DOMAINS:
        return CheckResult(name, 0, 0, skipped="its reward is a test signal, not correctness")
    size = task.size(split)
    count = problems if size is None else min(problems, size)
    failures: list[CheckFailure] = []
    refs = 0
    answers: list[Fraction | None] = []
    for i in range(count):
        try:
            ex = task.example(i, split)
        except Exception as e:  # a generator bug: the task is unusable
            return CheckResult(name, i, refs, error=f"cannot build {split} item {i}: {e!r}"[:300])
        answers.append(as_number(str(ex.answer)))
        cases = trivial_responses(task, ex)
        ref = task.reference_response(ex)
        if ref is not None:
            cases = {"reference": ref, **cases}
            refs += 1
        scores = scorer(task, ex, list(cases.values()))
        for (case, text), sc in zip(cases.items(), scores, strict=True):
            want_one = case == "reference"
            bad = sc.reward < 1.0 - 1e-9 if want_one else sc.reward > 0.0
            if bad or sc.is_infra_error:
                failures.append(CheckFailure(name, ex.uid, case, sc.reward, sc.reason, text))
    return CheckResult(name, count, refs, tuple(failures), constant=constant_answer(answers))


def floor_rewards(
    task: Task, example: Example, scorer: Scorer = score_in_process
) -> dict[str, float]:
    """Each trivial policy's reward on ``example``: ``{"empty": 0.0, "format": 0.0, ...}``."""
    cases = trivial_responses(task, example)
    scores = scorer(task, example, list(cases.values()))
    return {case: float(sc.reward) for case, sc in zip(cases, scores, strict=True)}


# --- which tasks, and the pre-flight of train and eval ---------------------------------------

RG_SAMPLE = 12  # reasoning-gym datasets in the default `prorl tasks --check`, beside the OOD set
MODES = ("strict", "exclude", "skip")


class SelfCheckError(ValueError):
    """A task failed its self-check: its score can be had without solving the problem."""


def default_check_names(seed: int = 0) -> list[str]:
    """Every built-in task that builds without settings (not the toy ones), the held-out OOD
    set and a fixed sample of the other reasoning-gym datasets (unsound ones left out)."""
    import random

    from prorl.tasks import list_tasks
    from prorl.tasks.reasoning_gym import OOD_TASKS, UNSOUND, available_datasets

    names = [
        info.name
        for info in list_tasks()
        if info.name != "rg" and info.domain not in UNCHECKED_DOMAINS and _builds(info.name)
    ]
    pool = [d for d in available_datasets() if d not in UNSOUND and d not in OOD_TASKS]
    sample = random.Random(seed).sample(pool, min(RG_SAMPLE, len(pool)))
    return names + [f"rg/{d}" for d in (*OOD_TASKS, *sorted(sample))]


def _builds(name: str) -> bool:
    from prorl.tasks import get_task

    try:
        get_task(name)
    except (ValueError, TypeError):  # e.g. file tasks need a path
        return False
    return True


def preflight(
    tasks: dict[str, Task],
    mode: str,
    problems: int = 3,
    warn: Callable[[str], None] = print,
    exclude_hint: str = "data.self_check=exclude",
) -> list[str]:
    """Self-check ``tasks`` (name -> task) before a run; return the names that failed.

    ``strict`` raises ``SelfCheckError`` naming the first failing task and case; ``exclude``
    warns once per failing task and returns them for the caller to drop; ``skip`` checks
    nothing."""
    if mode not in MODES:
        raise ValueError(f"self-check mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "skip":
        return []
    failed = []
    for name, task in tasks.items():
        result = check_task(task, problems)
        if result.ok:
            continue
        if mode == "strict":
            raise SelfCheckError(
                f"task self-check failed: {result.verdict().split(maxsplit=1)[1]} "
                "(the score can be had without solving the problem; fix the task, or "
                f"{exclude_hint} leaves failing tasks out)"
            )
        warn(f"warning: leaving out {name}: {result.verdict().split(maxsplit=1)[1]}")
        failed.append(name)
    return failed
