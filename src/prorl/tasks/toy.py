"""A toy task for learning tests: the reward is the share of response tokens with an even id.

A randomly initialised model scores about 0.5 with spread between samples, so group
advantages are informative from the first step, and only a working policy gradient raises
the score: it must move probability mass onto the rewarded half of the vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prorl.tasks.base import register_task
from prorl.types import Example, Score


class EvenTokensTask:
    name = "toy-even"
    domain = "toy"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def size(self, split: str = "train") -> int | None:
        return None if split == "train" else 8

    def example(self, index: int, split: str = "train") -> Example:
        # One fixed prompt: what is learned on training items is what validation measures.
        prompt = ({"role": "user", "content": "Write anything."},)
        return Example(f"{self.name}:{split}:{index}", self.name, prompt, "", {"split": split})

    def score(self, response: str, example: Example) -> Score:
        # The verifier sees text, not ids: re-tokenise with the tiny model's tokenizer.
        ids = _tokenizer().encode(response, add_special_tokens=False).ids
        if not ids:
            return Score(0.0, "format")
        return Score(sum(1 for i in ids if i % 2 == 0) / len(ids), "ok")

    def format_answer(self, content: str) -> str:
        return content  # no answer format: any text is a response

    def reference_response(self, example: Example) -> None:
        return None  # no reference answer: the reward is a test signal (selfcheck skips "toy")


_TOK: Any = None


def _tokenizer() -> Any:
    global _TOK
    if _TOK is None:  # the `tokenizers` library alone: no torch in verifier workers
        from tokenizers import Tokenizer

        _TOK = Tokenizer.from_file(
            str(Path(__file__).parents[1] / "assets/tokenizer/tokenizer.json")
        )
    return _TOK


@register_task(
    "toy-even",
    domain="toy",
    description="reward = share of even token ids (tests)",
    verifier="token parity",
)
def make_toy_task(seed: int = 0) -> EvenTokensTask:
    return EvenTokensTask(seed)
