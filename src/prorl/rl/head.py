"""Sampled-token log-probs and entropy straight from hidden states and the LM head weights.

``selective_log_softmax`` avoids float32 copies of the logits, but the logits themselves
are still ``[N, V]``: at 8k response tokens and Qwen's 151,936-token vocabulary that is
2.5 GB in bf16 (5 GB in fp32), kept for the backward, plus a gradient of the same size.
Here the LM head is applied ``chunk`` rows at a time inside one autograd function: each
chunk's logits live only while its log-softmax, gathered log-prob and entropy are taken,
and the backward recomputes them chunk by chunk (one more LM-head matmul, as activation
checkpointing would cost) instead of keeping them. What is saved for the backward is the
hidden states ``[N, H]`` and the ``[N]`` logsumexp.

Numerics follow ``F.linear`` under the caller's autocast: the matmul runs in
``compute_dtype`` (bf16 under autocast, else the weights' dtype), softmax and friends in
float32, and the weight gradient is accumulated in float32 across chunks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# float32 scratch per chunk: rows x V x 4 bytes. 256 MiB is 441 rows at V = 151,936 and
# 1,365 at SmolLM2's 49,152: large enough that the matmul stays efficient, small beside the
# 2.5-5 GB of whole logits it replaces.
CHUNK_BYTES = 256 << 20


def chunk_rows(vocab: int, budget: int = CHUNK_BYTES) -> int:
    """Rows per chunk so that one float32 ``[rows, vocab]`` buffer fits ``budget`` bytes."""
    return max(16, budget // (4 * vocab))


def _chunk_logits(
    h: Tensor, w: Tensor, b: Tensor | None, dtype: torch.dtype, temperature: float
) -> Tensor:
    """float32 ``[c, V]`` logits / temperature of the hidden rows ``h`` ``[c, H]``."""
    z = F.linear(h.to(dtype), w, b).float()  # a copy unless already fp32: ours to modify
    return z if temperature == 1.0 else z.div_(temperature)


class _HeadLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        ids: Tensor,
        temperature: float,
        chunk: int,
        dtype: torch.dtype,
        with_entropy: bool,
        shape: torch.Size,
    ) -> tuple[Tensor, Tensor]:
        n = hidden.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)  # [N]
        # outputs made in the caller's shape and written through flat views: returning a
        # view would trip FSDP2's check on the model's output (its hooks and in-place ops)
        out_lp = lse.new_empty(shape)  # [...]
        out_ent = lse.new_empty(shape if with_entropy else (0,))  # [...] or [0]
        logprobs, entropy = out_lp.view(-1), out_ent.view(-1)  # [N], [N] or [0]
        # the caller's autocast is replaced by the explicit casts (the backward has none)
        with torch.autocast(hidden.device.type, enabled=False), torch.no_grad():
            w = weight.to(dtype)  # [V, H] one cast per call, as autocast's cache does
            b = None if bias is None else bias.to(dtype)
            for s in range(0, n, chunk):
                z = _chunk_logits(hidden[s : s + chunk], w, b, dtype, temperature)  # [c, V]
                lse_c = torch.logsumexp(z, dim=-1)  # [c]
                lse[s : s + chunk] = lse_c
                logprobs[s : s + chunk] = z.gather(-1, ids[s : s + chunk, None])[:, 0] - lse_c
                if with_entropy:  # H = lse - sum(p * z), p = exp(z - lse)
                    p = (z - lse_c[:, None]).exp_()  # [c, V]
                    entropy[s : s + chunk] = lse_c - p.mul_(z).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, ids, lse)
        ctx.temperature, ctx.chunk, ctx.dtype = temperature, chunk, dtype
        ctx.mark_non_differentiable(out_ent)  # a metric, never part of the loss
        return out_lp, out_ent

    @staticmethod
    def backward(ctx: Any, grad_lp: Tensor, _grad_entropy: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        hidden, weight, bias, ids, lse = ctx.saved_tensors
        t, chunk, dtype = ctx.temperature, ctx.chunk, ctx.dtype
        grad_lp = grad_lp.reshape(-1)  # [N]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None  # [N, H]
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None  # [V, H]
        grad_b = None
        if need_b:
            grad_b = torch.zeros_like(bias, dtype=torch.float32)
        with torch.autocast(hidden.device.type, enabled=False), torch.no_grad():
            w = weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s : s + chunk].to(dtype)  # [c, H]
                g = grad_lp[s : s + chunk].float()[:, None] / t  # [c, 1]
                # d logprob / d logits = (onehot - softmax) / T, times the incoming gradient
                dz = _chunk_logits(h, w, b, dtype, t)  # [c, V]
                dz.sub_(lse[s : s + chunk, None]).exp_().mul_(-g)
                dz.scatter_add_(-1, ids[s : s + chunk, None], g)
                dzc = dz.to(dtype)  # [c, V] what autocast's matmul backward would get
                if grad_h is not None:
                    grad_h[s : s + chunk] = dzc @ w  # [c, H]
                if grad_w is not None and dtype == torch.float32:
                    grad_w.addmm_(dzc.T, h)  # [V, H] in place: no [V, H] temporary
                elif grad_w is not None:
                    grad_w.add_(dzc.T @ h)  # [V, H] bf16 per chunk, summed in float32
                if grad_b is not None:
                    grad_b.add_(dz.sum(0))
        out_w = None if grad_w is None else grad_w.to(weight.dtype)
        out_b = None if grad_b is None else grad_b.to(bias.dtype)
        return grad_h, out_w, out_b, None, None, None, None, None, None


def head_logprobs(
    hidden: Tensor,
    weight: Tensor,
    token_ids: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``[...]`` (float32) of ``token_ids`` ``[...]`` under
    ``log_softmax(F.linear(hidden, weight, bias) / temperature)``, and optionally the entropy
    of that distribution (detached), without materialising the ``[..., V]`` logits.

    ``hidden`` is ``[..., H]``; ``chunk`` rows at a time (default :func:`chunk_rows`). Under
    ``torch.autocast`` for ``hidden``'s device the matmuls run in its dtype, as ``F.linear``
    would. Gradients flow to ``hidden``, ``weight`` and ``bias``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if token_ids.shape != hidden.shape[:-1]:
        raise ValueError(
            f"need hidden [..., H] and token_ids [...], got {tuple(hidden.shape)} and "
            f"{tuple(token_ids.shape)}"
        )
    device = hidden.device.type
    dtype = weight.dtype
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    rows = chunk or chunk_rows(weight.shape[0])
    flat_h = hidden.reshape(-1, hidden.shape[-1])  # [N, H] (a copy only for strided views)
    flat_ids = token_ids.reshape(-1).long()  # [N]
    lp, ent = _HeadLogProbs.apply(
        flat_h, weight, bias, flat_ids, temperature, rows, dtype, with_entropy, token_ids.shape
    )
    return lp, (ent if with_entropy else None)
