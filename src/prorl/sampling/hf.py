"""Batched sampling with a Hugging Face causal LM and its KV cache.

A hand-written decode loop instead of ``model.generate`` because we need, per token, the
log-prob under the tempered distribution (what the trainer recomputes), the finish reason,
and sampling noise that depends only on (seed, prompt, sample index): each row draws its
uniform numbers from its own ``torch.Generator``, so results do not change with batch
composition. Prompts are left-padded; position ids skip the padding.

Two things keep it fast on a CPU, where every row of a decode step costs real time:
- a prompt is prefilled once and its KV cache copied to the rows of its n samples (the
  prefill of 8 copies of a 140-token prompt cost more than 64 decode steps);
- rows that finished are dropped from the batch (and the cache) instead of being carried
  along as padding until the longest sample ends;
- the KV cache reserves room for the response and decode steps write into it, instead of
  ``DynamicCache`` copying the whole cache at every step (``prorl.sampling.kv_cache``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from prorl.models import eos_token_ids
from prorl.policy import autocast, policy_device
from prorl.sampling.attention import gqa_attention
from prorl.sampling.base import derive_seed, per_prompt_seeds
from prorl.sampling.kv_cache import reserved_cache
from prorl.types import Sample, SamplingParams

# Response positions the KV cache reserves up front; longer responses double it as needed.
RESERVE_TOKENS = 256

# One unit of work: a prompt and the sample indices drawn from one prefill of it.
Unit = tuple[int, list[int]]


class HFSampler:
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, bf16: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # bf16 autocast re-casts every weight at every forward: for decode steps of a few
        # dozen tokens that costs more than it saves (2.6x slower on a bf16-capable CPU,
        # docs/benchmarks.md), so on CPU the sampler decodes in fp32. GPUs keep it.
        self.bf16 = bf16
        self.eos_ids = sorted(eos_token_ids(tokenizer, model))
        self.pad_id = tokenizer.pad_token_id
        # False: transformers' DynamicCache, which copies the cache at every step (kept for
        # the A/B in bench/bench_kv_cache.py; samples are the same either way)
        self.reserve_kv = True

    def update_weights(self, model: Any) -> None:
        self.model = model  # shares the trainer's module: nothing to copy

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int | Sequence[int],
    ) -> list[list[Sample]]:
        seeds = per_prompt_seeds(seed, len(prompts))
        units: list[Unit] = [
            (i, list(range(j, min(j + self.batch_size, n))))
            for i in range(len(prompts))
            for j in range(0, n, self.batch_size)
        ]
        # Similar prompt lengths in one batch: less left padding.
        units.sort(key=lambda u: len(prompts[u[0]]))
        out: list[list[Sample | None]] = [[None] * n for _ in prompts]
        # grouped K/V heads go to sdpa as they are: no copy of the cache at every step
        with gqa_attention(self.model):
            for batch in _fill_batches(units, self.batch_size):
                row_seeds = [derive_seed(seeds[i], j) for i, js in batch for j in js]
                samples = iter(
                    self._generate_batch(
                        [prompts[i] for i, _ in batch],
                        [len(js) for _, js in batch],
                        row_seeds,
                        params,
                    )
                )
                for i, js in batch:
                    for j in js:
                        out[i][j] = next(samples)
        return [[s for s in group if s is not None] for group in out]

    @torch.no_grad()
    def _generate_batch(
        self,
        prompts: list[Sequence[int]],
        repeats: list[int],
        row_seeds: list[int],
        params: SamplingParams,
    ) -> list[Sample]:
        model, device = self.model, policy_device(self.model)
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in row_seeds]
        ids, mask = self._left_pad(prompts, device)  # [U, P]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [U, P]
        rows = len(row_seeds)
        tokens = torch.full((rows, params.max_new_tokens), self.pad_id, dtype=torch.long)
        logps = torch.zeros((rows, params.max_new_tokens))  # [B, T]
        lengths = torch.full((rows,), params.max_new_tokens, dtype=torch.long)  # [B]
        alive = torch.arange(rows)  # original row of each row still decoding
        eos = torch.tensor(self.eos_ids, device=device)
        was_training = model.training
        model.eval()
        try:
            # decode steps write into reserved room (doubling when outgrown) instead of
            # DynamicCache copying the whole cache at every step
            first = ids.shape[1] + min(params.max_new_tokens, RESERVE_TOKENS)
            full = ids.shape[1] + params.max_new_tokens
            room = reserved_cache(model, first, full) if self.reserve_kv else None
            with self._autocast():
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=room,
                    use_cache=True,
                    logits_to_keep=1,  # only the last position, not [U, P, V]
                )
            cache, logits = out.past_key_values, out.logits[:, -1]  # [U, V]
            # Copy each prompt's cache to the rows of its samples.
            expand = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(repeats))
            cache.batch_select_indices(expand.to(device))
            logits, mask = logits[expand], mask[expand]  # [B, V], [B, P]
            step_pos = positions[expand, -1:]  # [B, 1]
            for t in range(params.max_new_tokens):
                logprobs = torch.log_softmax(logits.float() / max(params.temperature, 1e-6), -1)
                token = _sample(logprobs, params.top_p, gens)  # [b]
                tokens[alive, t] = token.cpu()
                logps[alive, t] = logprobs.gather(-1, token[:, None])[:, 0].cpu()
                finished = torch.isin(token, eos)  # [b]
                lengths[alive[finished.cpu()]] = t + 1
                if t + 1 == params.max_new_tokens or bool(finished.all()):
                    break
                if bool(finished.any()):  # drop finished rows from the batch and the cache
                    keep = (~finished).nonzero()[:, 0]  # [b']
                    cache.batch_select_indices(keep)
                    alive, token, mask, step_pos = (
                        alive[keep.cpu()],
                        token[keep],
                        mask[keep],
                        step_pos[keep],
                    )
                    gens = [gens[k] for k in keep.tolist()]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)  # [b, P+t+1]
                step_pos = step_pos + 1
                with self._autocast():
                    out = model(
                        input_ids=token[:, None],
                        attention_mask=mask,
                        position_ids=step_pos,
                        past_key_values=cache,
                        use_cache=True,
                    )
                cache, logits = out.past_key_values, out.logits[:, -1]
        finally:
            model.train(was_training)
        return [self._to_sample(tokens[r], logps[r], int(lengths[r])) for r in range(rows)]

    def _left_pad(
        self, prompts: list[Sequence[int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)  # [U, P]
        mask = torch.zeros((len(prompts), width), dtype=torch.long)  # [U, P]
        for b, p in enumerate(prompts):
            ids[b, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[b, width - len(p) :] = 1
        return ids.to(device), mask.to(device)

    def _to_sample(self, tokens: torch.Tensor, logps: torch.Tensor, length: int) -> Sample:
        ids, lps = tokens[:length].tolist(), logps[:length].tolist()
        # An end-of-turn token is kept: the policy must learn to emit it.
        reason = "stop" if ids and ids[-1] in self.eos_ids else "length"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Sample(tuple(ids), tuple(lps), text, reason)  # type: ignore[arg-type]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        kind = policy_device(self.model).type
        if kind == "cpu":
            return contextlib.nullcontext()  # fp32 decode on CPU: see __init__
        return autocast(self.bf16, kind)


def _fill_batches(units: list[Unit], batch_size: int) -> Iterator[list[Unit]]:
    """Consecutive units, as many as fit in ``batch_size`` rows."""
    batch: list[Unit] = []
    for unit in units:
        if batch and sum(len(js) for _, js in batch) + len(unit[1]) > batch_size:
            yield batch
            batch = []
        batch.append(unit)
    if batch:
        yield batch


def _sample(logprobs: torch.Tensor, top_p: float, gens: list[torch.Generator]) -> torch.Tensor:
    """Inverse-CDF sampling from the top-p nucleus, one uniform number per row.

    One draw per row (instead of Gumbel noise over the whole vocabulary) keeps the noise
    cheap; a token with zero probability can never be chosen because the CDF is flat there
    and ``searchsorted(right=True)`` returns the first index whose CDF exceeds the draw.
    """
    probs = logprobs.double().exp()  # [b, V]
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)  # [b, V]
        # keep a token if the mass before it is < top_p (the top token is always kept)
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        probs = probs.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted), 0.0)
    cdf = probs.cumsum(-1)  # [b, V]
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in gens])  # [b]
    u = u.to(cdf.device) * cdf[:, -1]
    token = torch.searchsorted(cdf, u[:, None], right=True)[:, 0]
    return token.clamp(max=logprobs.shape[-1] - 1)
