"""Every reasoning-gym dataset as a task: ``rg/<dataset>`` with the dataset's own settings.

The answer goes inside ``<answer></answer>`` (the ProRL format) and is scored by the
dataset's own ``score_answer``: a continuous reward in [0, 1]. Held-out splits use a
different seed and are de-duplicated against training by question text, so a small
problem space (e.g. ``leg_counting`` with few animals) never leaks val items into training.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from typing import Any

from prorl.tasks.base import register_family
from prorl.types import Example, Score

INSTRUCTION = (
    "Think step by step, then give your final answer inside <answer></answer> tags, "
    "for example <answer>42</answer>."
)
# The out-of-distribution trio ProRL held out of training.
OOD_TASKS = ("acre", "boxnet", "game_of_life_halting")
# Offsets that put each split's RNG seeds far apart.
_SPLIT_SEED = {"train": 0, "val": 1_000_003, "test": 2_000_003}
_ANSWER_RE = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)


def extract_answer(response: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` after any ``</think>``."""
    text = response.rsplit("</think>", 1)[-1]
    matches = _ANSWER_RE.findall(text)
    return matches[-1].strip() if matches else None


def available_datasets() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


class ReasoningGymTask:
    domain = "logic"

    def __init__(
        self,
        dataset: str,
        *,
        seed: int = 0,
        val_size: int = 100,
        test_size: int = 100,
        instruction: str = INSTRUCTION,
        format_reward: float = 0.0,
        **settings: Any,
    ) -> None:
        if dataset not in available_datasets():
            raise ValueError(
                f"unknown reasoning-gym dataset {dataset!r}; "
                f"known: {', '.join(available_datasets())}"
            )
        self.dataset = dataset
        self.name = f"rg/{dataset}"
        self.seed = seed
        self.settings = settings
        # Small models follow a format instruction in the user turn far more often than in
        # the system turn, so it is appended to the question.
        self.instruction = instruction
        if not 0.0 <= format_reward < 1.0:
            raise ValueError(f"format_reward must be in [0, 1), got {format_reward}")
        # Credit for a well-formed but wrong answer: a bootstrap for models that almost never
        # use the tags (SmolLM2-135M: ~3% of samples), so that some groups carry signal.
        self.format_reward = format_reward
        self._sizes = {"train": None, "val": val_size, "test": test_size}
        self._ds: dict[str, Any] = {}
        # Building the dataset validates the settings now, not mid-training.
        self._dataset("train")

    def _dataset(self, split: str) -> Any:
        if split not in self._ds:
            import reasoning_gym

            size = self._sizes[split] or 1_000_000_000
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
            ds = self._dataset(split)
            held.update(_digest(ds[i]["question"]) for i in range(self._sizes[split] or 0))
        return frozenset(held)

    def size(self, split: str = "train") -> int | None:
        return self._sizes[split]

    def example(self, index: int, split: str = "train") -> Example:
        if split not in _SPLIT_SEED:
            raise ValueError(f"unknown split {split!r}")
        ds = self._dataset(split)
        if split != "train":
            if not 0 <= index < (self._sizes[split] or 0):
                raise IndexError(f"{self.name} {split} has {self._sizes[split]} items")
            entry = ds[index]
        else:
            # Skip (deterministically) training items that coincide with held-out ones.
            probe = index
            entry = ds[probe]
            while _digest(entry["question"]) in self._held_out_questions:
                probe += 1_000_000_007
                entry = ds[probe % 1_000_000_000]
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
        answer = extract_answer(response)
        if answer is None:
            return Score(0.0, "format")
        ds = self._dataset(str(example.meta.get("split", "train")))
        try:
            reward = float(ds.score_answer(answer, example.meta["entry"]))
        except Exception as e:  # a scorer bug must not kill training
            return Score(0.0, "INFRA_ERROR", {"error": repr(e)[:200]})
        reward = min(1.0, max(0.0, reward))
        if reward >= 1.0:
            return Score(1.0, "ok")
        return Score(max(reward, self.format_reward), "wrong")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@register_family(
    "rg",
    domain="logic",
    description="any reasoning-gym dataset, e.g. rg/leg_counting; settings pass through",
    verifier="reasoning-gym score_answer on <answer> content",
)
def make_reasoning_gym_task(dataset: str, **settings: Any) -> ReasoningGymTask:
    return ReasoningGymTask(dataset, **settings)
