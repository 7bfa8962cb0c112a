"""A KV cache with room reserved ahead of the response, for the HF sampler's decode loop.

transformers' ``DynamicCache`` appends each decode step's key and value with ``torch.cat``,
which copies every layer's whole cache at every step: quadratic in the response length, and
22% of the sampler's operator time on SmolLM2 (``bench/profile_generate.py``). Here each
layer allocates room for ``capacity`` positions and writes a step in place; attention reads
a view of the filled part. Outgrown room doubles (up to ``limit``), so the copying is linear
in the response length and the memory at most twice what is filled: a long response cap
does not reserve its whole length for rows that finish early. Dropping finished rows
(``batch_select_indices``) still copies, as with ``DynamicCache``, but once per drop, not
every step.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in ``[batch, kv_heads, capacity, head_dim]`` buffers;
    ``keys``/``values`` are views of the first ``length`` positions, which is all the rest
    of transformers reads. Outgrown, the room doubles, to no more than ``limit`` positions
    unless a write needs more."""

    is_croppable = False  # the decode loop never crops; a crop would desync ``length``

    def __init__(self, capacity: int, limit: int | None = None) -> None:
        super().__init__()
        self.capacity = capacity
        self.limit = limit if limit is not None else 1 << 62
        self.length = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._k is None or self._v is None or end > self.capacity:
            if end > self.capacity:  # outgrown: double, to the limit unless ``end`` needs more
                self.capacity = max(end, min(2 * self.capacity, self.limit))
            self._k = self._reserve(self._k, key_states)
            self._v = self._reserve(self._v, value_states)
        self._k[..., self.length : end, :] = key_states
        self._v[..., self.length : end, :] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values  # type: ignore[return-value]

    def _reserve(self, old: torch.Tensor | None, states: torch.Tensor) -> torch.Tensor:
        """A buffer of ``capacity`` positions holding the ``length`` cached so far."""
        batch, heads, _, dim = states.shape
        buf = states.new_empty((batch, heads, self.capacity, dim))
        if old is not None:
            buf[..., : self.length, :] = old[..., : self.length, :]
        return buf

    def _expose(self) -> None:
        assert self._k is not None and self._v is not None
        self.keys = self._k[..., : self.length, :]
        self.values = self._v[..., : self.length, :]

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._k is None or self._v is None:
            return
        self._k, self._v = self._k[indices], self._v[indices]
        self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is None or self._v is None:
            return
        self._k = self._k.repeat_interleave(repeats, dim=0)
        self._v = self._v.repeat_interleave(repeats, dim=0)
        self._expose()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def reset(self) -> None:
        self._k = self._v = None
        self.length = 0
        super().reset()


def reserved_cache(model: Any, capacity: int, limit: int | None = None) -> Cache:
    """A cache for ``model`` with ``capacity`` positions reserved in every layer, growing to
    at most ``limit`` (the prompt width plus the response cap: all a decode loop writes)."""
    layers = model.config.num_hidden_layers
    return Cache(layers=[ReservedLayer(capacity, limit) for _ in range(layers)])
