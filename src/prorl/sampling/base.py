"""The ``Sampler`` protocol and the seed derivation every backend shares."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from prorl.types import Sample, SamplingParams


class Sampler(Protocol):
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int | Sequence[int],
    ) -> list[list[Sample]]:
        """``n`` samples for each prompt (token ids), in prompt order.

        ``seed`` is one int (per-prompt seeds derived from it and the prompt's position) or
        one seed per prompt. Sample ``j`` of a prompt depends only on (its seed, j, the
        prompt, the weights): not on batch size or the other prompts in the call, so a run
        split across workers draws the same samples as a single process.
        """
        ...

    def update_weights(self, model: Any) -> None:
        """Make the sampler generate from ``model``'s current parameters."""
        ...


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings, stable across processes and runs."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def per_prompt_seeds(seed: int | Sequence[int], count: int) -> list[int]:
    """One seed per prompt: given ones checked for count, or derived from one int and the
    prompt's position (as every Sampler does)."""
    if isinstance(seed, int):
        return [derive_seed(seed, i) for i in range(count)]
    seeds = list(seed)
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} prompts")
    return seeds
