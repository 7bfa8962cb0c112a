"""Plain data records that flow through one RL step. No torch here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Message = Mapping[str, str]  # {"role": "user", "content": "..."}
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Example:
    """One problem. ``prompt`` is a chat conversation (usually one user turn).

    ``answer`` is the reference the verifier compares against (a string; structured
    references such as code tests are JSON-encoded or live in ``meta``). ``uid`` is stable:
    the same (task, split, index, seed) always gives the same uid and content.
    """

    uid: str
    task: str
    prompt: tuple[Message, ...]
    answer: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The last user message: what a verifier or a report shows as the problem."""
        for m in reversed(self.prompt):
            if m.get("role") == "user":
                return m.get("content", "")
        return ""


# Reasons a verifier result can carry. INFRA_ERROR means the harness failed, not the model:
# such items are excluded from the update and counted, never scored as a wrong answer.
REASONS = (
    "ok",
    "wrong",
    "format",
    "TIMEOUT",
    "MEMORY",
    "RUNTIME_ERROR",
    "OUTPUT_LIMIT",
    "INFRA_ERROR",
)


@dataclass(frozen=True)
class Score:
    """A verifier's verdict. ``reward`` is correctness alone (1 = correct; a fraction only
    where it means "partly correct", such as the share of tests or constraints met).
    ``formatted``: whether the response gave an answer in the task's expected format
    (True/False), None where the task has no answer format (e.g. instruction following).
    Training may add format credit on top (``shaping.format_reward``); a score never does."""

    reward: float
    reason: str = "ok"
    details: Mapping[str, Any] = field(default_factory=dict)
    formatted: bool | None = None

    @property
    def is_infra_error(self) -> bool:
        return self.reason == "INFRA_ERROR"


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Sample:
    """One generated response. ``logprobs[i]`` is log pi(token_ids[i] | prefix) under the
    sampling policy with its logits divided by the temperature, before top-p truncation:
    the trainer computes its log-probs the same way, so the PPO ratio starts at exactly 1."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    text: str
    finish_reason: FinishReason


class BatchScorer(Protocol):
    """What scores a step's samples: one list of scores per prompt, in order."""

    def __call__(
        self, examples: list[Example], samples: list[list[Sample]]
    ) -> list[list[Score]]: ...
