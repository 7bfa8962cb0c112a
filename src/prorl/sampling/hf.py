"""Batched sampling with a Hugging Face causal LM and its KV cache.

A hand-written decode loop instead of ``model.generate`` because we need, per token, the
log-prob under the tempered distribution (what the trainer recomputes), the finish reason,
and sampling noise that depends only on (seed, prompt, sample index): each row draws from
its own ``torch.Generator`` with the Gumbel-max trick, so results do not change with batch
composition. Prompts are left-padded; position ids skip the padding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from prorl.models import eos_token_ids
from prorl.policy import autocast
from prorl.sampling.base import derive_seed
from prorl.types import Sample, SamplingParams


class HFSampler:
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, bf16: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.bf16 = bf16
        self.eos_ids = sorted(eos_token_ids(tokenizer, model))
        self.pad_id = tokenizer.pad_token_id

    def update_weights(self, model: Any) -> None:
        self.model = model  # shares the trainer's module: nothing to copy

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int | Sequence[int],
    ) -> list[list[Sample]]:
        seeds = _per_prompt_seeds(seed, len(prompts))
        rows = [(p, i, j) for i, p in enumerate(prompts) for j in range(n)]
        # Sorting rows by prompt length packs similar lengths together: less padding.
        order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]))
        results: list[Sample | None] = [None] * len(rows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = [(rows[r][0], derive_seed(seeds[rows[r][1]], rows[r][2])) for r in chunk]
            for r, sample in zip(chunk, self._generate_batch(batch, params), strict=True):
                results[r] = sample
        out: list[list[Sample]] = [[] for _ in prompts]
        for (_, i, _), maybe in zip(rows, results, strict=True):
            assert maybe is not None
            out[i].append(maybe)
        return out

    @torch.no_grad()
    def _generate_batch(
        self, batch: list[tuple[Sequence[int], int]], params: SamplingParams
    ) -> list[Sample]:
        model, device = self.model, _device(self.model)
        gens = [torch.Generator(device="cpu").manual_seed(s) for _, s in batch]
        width = max(len(p) for p, _ in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)  # [B, P]
        mask = torch.zeros((len(batch), width), dtype=torch.long)  # [B, P]
        for b, (p, _) in enumerate(batch):
            ids[b, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[b, width - len(p) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, P]
        eos = torch.tensor(self.eos_ids, device=device)
        done = torch.zeros(len(batch), dtype=torch.bool, device=device)  # [B]
        tokens, logps = [], []
        was_training = model.training
        model.eval()
        cache = None
        step_ids, step_pos = ids, positions
        try:
            for _ in range(params.max_new_tokens):
                with self._autocast():
                    out = model(
                        input_ids=step_ids,
                        attention_mask=mask,
                        position_ids=step_pos,
                        past_key_values=cache,
                        use_cache=True,
                        logits_to_keep=1,  # only the last position: not [B, P, V] at prefill
                    )
                cache = out.past_key_values
                logits = out.logits[:, -1].float() / max(params.temperature, 1e-6)  # [B, V]
                logprobs = torch.log_softmax(logits, dim=-1)  # [B, V]
                token = _sample(logprobs, params.top_p, gens)  # [B]
                token = torch.where(done, torch.full_like(token, self.pad_id), token)
                tokens.append(token)
                logps.append(logprobs.gather(-1, token[:, None])[:, 0])  # [B]
                done = done | torch.isin(token, eos)
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)  # [B, P+t]
                step_ids = token[:, None]
                step_pos = step_pos[:, -1:] + 1
        finally:
            model.train(was_training)
        return self._to_samples(torch.stack(tokens, 1), torch.stack(logps, 1))

    def _to_samples(self, tokens: torch.Tensor, logps: torch.Tensor) -> list[Sample]:
        samples = []
        eos = set(self.eos_ids)
        for row_t, row_l in zip(tokens.tolist(), logps.tolist(), strict=True):
            end = next((k for k, t in enumerate(row_t) if t in eos), None)
            if end is None:
                ids, lps, reason = row_t, row_l, "length"
            else:  # keep the end-of-turn token: the policy must learn to emit it
                ids, lps, reason = row_t[: end + 1], row_l[: end + 1], "stop"
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            samples.append(Sample(tuple(ids), tuple(lps), text, reason))  # type: ignore[arg-type]
        return samples

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if _device(self.model).type == "cpu":
            return autocast(self.bf16)  # a no-op where the CPU has no bf16 hardware
        return contextlib.nullcontext()


def _sample(logprobs: torch.Tensor, top_p: float, gens: list[torch.Generator]) -> torch.Tensor:
    """Gumbel-max sampling from the top-p nucleus, one generator per row."""
    scores = logprobs
    if top_p < 1.0:
        sorted_lp, idx = logprobs.sort(dim=-1, descending=True)  # [B, V]
        cum = sorted_lp.exp().cumsum(-1)
        # keep a token if the mass before it is < top_p (the top token is always kept)
        drop_sorted = (cum - sorted_lp.exp()) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        scores = logprobs.masked_fill(drop, float("-inf"))
    noise = torch.stack([_gumbel(scores.shape[-1], g) for g in gens]).to(scores.device)
    return (scores + noise).argmax(dim=-1)


def _gumbel(size: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(size, generator=gen).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def _per_prompt_seeds(seed: int | Sequence[int], count: int) -> list[int]:
    if isinstance(seed, int):
        return [derive_seed(seed, i) for i in range(count)]
    seeds = list(seed)
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} prompts")
    return seeds


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device
