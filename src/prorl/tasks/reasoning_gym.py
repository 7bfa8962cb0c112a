"""Every reasoning-gym dataset as a task: ``rg/<dataset>`` with the dataset's own settings.

The answer goes inside ``<answer></answer>`` (the ProRL format). The score is correctness
only: 1 when the dataset's own ``score_answer`` gives full credit to the tag's content, else
0. reasoning-gym's partial credit (e.g. ``len(answer) / len(response)`` for a response that
merely contains the answer: ``7726490`` for ``772649`` gets 0.86) is not correctness, and
format credit is training-only shaping (``shaping.format_reward``), never part of a score.
``Score.formatted`` says whether the response had an ``<answer>`` tag.

A few upstream scorers cannot tell right from wrong: ``_STRICT`` replaces them with a strict
comparison against the dataset's answer, and ``UNSOUND`` lists the datasets with no sound
check at all; building one of those raises unless ``allow_unsound=True`` (see
docs/verifiers.md, "reasoning-gym self-check").

Held-out splits use a different seed and are de-duplicated against training by question
text, so a small problem space (e.g. ``leg_counting`` with few animals) never leaks val
items into training.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from prorl.tasks.base import register_family
from prorl.types import Example, Score
from prorl.verify.lenient import as_number, last_number, strip_prompt

# The example tag is empty, and an empty answer is no answer, so a response that echoes the
# prompt back is never scored correct, nor credited as formatted (a filled placeholder such
# as <answer>your answer</answer> would earn shaping's format credit when copied).
INSTRUCTION = "Think step by step, then give your final answer inside <answer></answer> tags."
ANSWER_MODES = ("tags", "last_number")
# The out-of-distribution trio ProRL held out of training (none of them is in UNSOUND).
OOD_TASKS = ("acre", "boxnet", "game_of_life_halting")
# Offsets that put each split's RNG seeds far apart.
_SPLIT_SEED = {"train": 0, "val": 1_000_003, "test": 2_000_003}
_ANSWER_RE = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)
# Training items are generated lazily by index, so the training split asks for this many.
_TRAIN_SIZE = 1_000_000_000
# Datasets that cannot have 1e9 training items (found by timing every dataset at sizes
# 10, 2,000 and 1e6, and by building each at the sizes used here). Their training split is
# this many items, cycled through (index modulo size); each builds in about a second.
_FINITE_TRAIN_SIZE = {
    # Generates its whole question list in the constructor (1,000 items take 0.25-1 s).
    "acre": 2_000,
    # Draw one generator index per item in the constructor: 1e9 of them take ~2 minutes
    # and 8 GB (gsm_symbolic's build took 112 s).
    "gsm_symbolic": 1_000_000,
    "list_functions": 1_000_000,
    # Its config validation rejects sizes above 20,000.
    "word_ladder": 20_000,
}
# Step between candidates when a training item coincides with a held-out one (the old
# ``+ 1_000_000_007``, kept so that existing training streams do not change).
_SKIP = 1_000_000_007
_MAX_SKIPS = 10_000


def extract_answer(response: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` after any ``</think>``."""
    text = response.rsplit("</think>", 1)[-1]
    matches = _ANSWER_RE.findall(text)
    return matches[-1].strip() if matches else None


def format_answer(content: str) -> str:
    return f"<answer>{content}</answer>"


def available_datasets() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def _exact_match(answer: str, entry: Mapping[str, Any]) -> bool:
    """Whitespace- and case-insensitive equality with the dataset's single answer."""
    return entry.get("answer") is not None and _normalized(answer) == _normalized(
        str(entry["answer"])
    )


# Datasets whose upstream ``score_answer`` gives full credit to wrong answers, with the
# check used instead (found by the self-check sweep, docs/verifiers.md):
_STRICT: dict[str, Callable[[str, Mapping[str, Any]], bool]] = {
    # Upstream compares ``bool(answer) == bool(entry["answer"])``: the answer is the string
    # "True" or "False", both truthy, so any non-empty text ("xyzzy", "False") scores 1.
    "game_of_life_halting": _exact_match,
}

# Datasets whose upstream scorer raises on an answer it cannot parse (prime_factorization:
# ``int("xyzzy")``), which would make a garbled answer an INFRA_ERROR (left out of the
# update) instead of a wrong one. For these an exception from the scorer means "wrong".
_PARSE_ERRORS_ARE_WRONG = frozenset({"prime_factorization"})

# Datasets whose scorer cannot be trusted and cannot be repaired here: name -> why.
UNSOUND: dict[str, str] = {
    # Not a dataset but reasoning-gym's own mixer: it scores with its members' upstream
    # scorers, bypassing the checks here (game_of_life_halting's included).
    "composite": (
        "reasoning-gym's mixer scores with its members' unchecked scorers; "
        "mix rg/<dataset> tasks with data.tasks weights instead"
    ),
}


def score_response(
    dataset: str,
    score_answer: Callable[[str, Any], float],
    response: str,
    entry: Mapping[str, Any],
) -> Score:
    """Correctness of ``response`` on a reasoning-gym ``entry``: 1 only when the ``<answer>``
    content gets full credit (``score_answer`` >= 1, or the dataset's ``_STRICT`` check)."""
    answer = extract_answer(response)
    if not answer:  # no tag, or an empty one (the instruction's own example)
        return Score(0.0, "format", formatted=False)
    try:
        strict = _STRICT.get(dataset)
        if strict is not None:
            correct, upstream = strict(answer, entry), None
        else:
            upstream = float(score_answer(answer, dict(entry)))
            correct = upstream >= 1.0  # NaN and partial credit are not correct
    except Exception as e:  # a scorer bug must not kill training
        if dataset in _PARSE_ERRORS_ARE_WRONG:
            return Score(0.0, "wrong", {"parse_error": repr(e)[:200]}, formatted=True)
        return Score(0.0, "INFRA_ERROR", {"error": repr(e)[:200]}, formatted=True)
    if correct:
        return Score(1.0, "ok", formatted=True)
    details = {"partial_credit": upstream} if upstream else {}
    return Score(0.0, "wrong", details, formatted=True)


def category(dataset: str) -> str:
    """The dataset's reasoning-gym category (arithmetic, algorithmic, logic, games, ...):
    the package its class lives in. It is the task's domain, so a mix of rg tasks spans the
    domains reasoning-gym itself names."""
    from reasoning_gym.factory import DATASETS

    return str(DATASETS[dataset][0].__module__.split(".")[1])


class ReasoningGymTask:
    domain = "logic"  # the class default; each task sets its dataset's category

    def __init__(
        self,
        dataset: str,
        *,
        seed: int = 0,
        val_size: int = 100,
        test_size: int = 100,
        instruction: str = INSTRUCTION,
        allow_unsound: bool = False,
        answer: str = "tags",
        **settings: Any,
    ) -> None:
        if dataset not in available_datasets():
            raise ValueError(
                f"unknown reasoning-gym dataset {dataset!r}; "
                f"known: {', '.join(available_datasets())}"
            )
        if "format_reward" in settings:
            raise ValueError(
                "format_reward is no longer a task setting: a task's score is correctness "
                "only. Format credit moved to shaping.format_reward (training-only)"
            )
        if dataset in UNSOUND and not allow_unsound:
            raise ValueError(
                f"rg/{dataset}: reasoning-gym's scorer cannot be trusted ({UNSOUND[dataset]}); "
                "pass allow_unsound=True to use it anyway"
            )
        if answer not in ANSWER_MODES:
            raise ValueError(f"rg/{dataset}: answer must be one of {', '.join(ANSWER_MODES)}")
        # tags: the content of the last <answer> tag, scored by the dataset (the ProRL
        # format); last_number: the last number of the response (numbers copied from the
        # prompt do not count), for numeric datasets and models that do not use the tags
        self.answer = answer
        self.dataset = dataset
        self.domain = category(dataset)
        self.name = f"rg/{dataset}"
        self.seed = seed
        self.settings = settings
        # Small models follow a format instruction in the user turn far more often than in
        # the system turn, so it is appended to the question.
        self.instruction = instruction
        self._sizes = {"train": None, "val": val_size, "test": test_size}
        self._ds: dict[str, Any] = {}
        # Building the dataset validates the settings now, not mid-training.
        self._dataset("train")
        if answer == "last_number" and as_number(str(self._train_entry(0)["answer"])) is None:
            raise ValueError(f"rg/{dataset}: answer=last_number needs numeric answers")

    @property
    def _train_size(self) -> int:
        return _FINITE_TRAIN_SIZE.get(self.dataset, _TRAIN_SIZE)

    def _dataset(self, split: str) -> Any:
        if split not in self._ds:
            import reasoning_gym

            size = self._sizes[split] or self._train_size
            try:
                self._ds[split] = reasoning_gym.create_dataset(
                    self.dataset, seed=self.seed + _SPLIT_SEED[split], size=size, **self.settings
                )
            except (TypeError, ValueError, AssertionError) as e:
                raise ValueError(f"bad settings for task {self.name}: {e}") from e
        return self._ds[split]

    @cached_property
    def _held_out_questions(self) -> frozenset[str]:
        held: set[str] = set()
        for split in ("val", "test"):
            held.update(
                _digest(self._held_out_entry(split, i)["question"])
                for i in range(self._sizes[split] or 0)
            )
        return frozenset(held)

    def size(self, split: str = "train") -> int | None:
        return self._sizes[split]

    def _held_out_entry(self, split: str, index: int) -> Any:
        """Held-out item ``index``. A few generators fail on some seeds (maze: "Could not
        find suitable path cell", test item 26): such an item is replaced by the dataset's
        item ``index + k * size`` for the first k that builds."""
        ds, size = self._dataset(split), self._sizes[split] or 0
        try:
            return ds[index]
        except Exception as first:
            for k in range(1, 11):
                try:
                    return ds[index + k * size]
                except Exception:
                    continue
            raise first

    def _train_entry(self, index: int) -> Any:
        """Training item ``index``: the dataset's item ``index`` modulo its training size,
        skipping (deterministically) items that coincide with held-out ones or that the
        generator fails to build (see ``_held_out_entry``)."""
        ds, size = self._dataset("train"), self._train_size
        probe = index % size
        error: Exception | None = None
        for _ in range(_MAX_SKIPS):
            try:
                entry = ds[probe]
            except Exception as e:
                error = error or e
            else:
                if _digest(entry["question"]) not in self._held_out_questions:
                    return entry
            probe = (probe + _SKIP) % size
        if error is not None:
            raise error
        raise ValueError(
            f"{self.name}: no training item outside the held-out set near index {index}; "
            "the problem space is too small for val_size/test_size"
        )

    def example(self, index: int, split: str = "train") -> Example:
        if split not in _SPLIT_SEED:
            raise ValueError(f"unknown split {split!r}")
        if split != "train":
            if not 0 <= index < (self._sizes[split] or 0):
                raise IndexError(f"{self.name} {split} has {self._sizes[split]} items")
            entry = self._held_out_entry(split, index)
        else:
            entry = self._train_entry(index)
        content = (
            f"{entry['question']}\n\n{self.instruction}" if self.instruction else entry["question"]
        )
        prompt = ({"role": "user", "content": content},)
        return Example(
            uid=f"{self.name}:{split}:{self.seed}:{index}",
            task=self.name,
            prompt=prompt,
            answer=str(entry["answer"]),
            meta={"entry": entry, "split": split, "question": entry["question"]},
        )

    def score(self, response: str, example: Example) -> Score:
        if self.answer == "last_number":
            found = last_number(strip_prompt(response, example.question))
            ok = found is not None and found == as_number(example.answer)
            # the format of this reading is "a number of its own": its absence is a format miss
            reason = "ok" if ok else ("wrong" if found is not None else "format")
            return Score(float(ok), reason, formatted=found is not None)
        ds = self._dataset(str(example.meta.get("split", "train")))
        return score_response(self.dataset, ds.score_answer, response, example.meta["entry"])

    def format_answer(self, content: str) -> str:
        return format_answer(content) if self.answer == "tags" else content

    def reference_response(self, example: Example) -> str | None:
        """The dataset's answer in the task's format; None where it has none (e.g.
        ``boxnet``, whose plans are checked by simulation)."""
        answer = example.meta["entry"].get("answer")
        return None if answer is None else self.format_answer(str(answer))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@register_family(
    "rg",
    domain="reasoning-gym category (arithmetic, algorithmic, logic, ...)",
    description="any reasoning-gym dataset, e.g. rg/leg_counting; settings pass through",
    verifier="full credit from reasoning-gym's score_answer on the <answer> content",
)
def make_reasoning_gym_task(dataset: str, **settings: Any) -> ReasoningGymTask:
    return ReasoningGymTask(dataset, **settings)
