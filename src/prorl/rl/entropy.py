"""Token entropy and sampled-token log-probs from logits, without a full log-softmax copy.

Logits are ``[B, L, V]`` with V = 49152 for SmolLM2: at B*L = 8k positions a float32 copy is
1.6 GB, and ``log_softmax`` for autograd keeps another one. These functions work on chunks of
``chunk_size`` positions (views, no copy of the input), compute in float32 whatever the input
dtype (bf16 logsumexp loses ~2 decimal digits), and return float32 ``[B, L]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

DEFAULT_CHUNK = 256  # positions per chunk: 256 x 49152 x 4 B = 48 MiB of float32 scratch


def _chunks(b: int, length: int, chunk_size: int) -> Iterator[tuple[slice, slice]]:
    """Slices (rows, positions) covering ``[b, length]`` with about ``chunk_size`` positions each.

    Whole rows are grouped when they are short; long rows are split along L. Slicing keeps
    views even when the logits are non-contiguous (``logits[:, :-1]``), where reshape would copy.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if length == 0 or b == 0:
        return
    if length >= chunk_size:
        for row in range(b):
            for start in range(0, length, chunk_size):
                yield slice(row, row + 1), slice(start, min(start + chunk_size, length))
    else:
        rows = max(1, chunk_size // length)
        for start in range(0, b, rows):
            yield slice(start, min(start + rows, b)), slice(0, length)


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    """float32 copy of ``logits / temperature`` (the division done in float32, not bf16)."""
    z = logits.to(torch.float32, copy=True)  # [b', l', V]
    return z if temperature == 1.0 else z.div_(temperature)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy ``H = logsumexp(z) - sum(softmax(z) * z)``, ``z = logits / temperature``,
    per position: ``[B, L, V] -> [B, L]``.

    Stable for any logit scale (no log of a probability that underflows to 0); differentiable.
    """
    _check_temperature(temperature)
    z = logits.float() / temperature  # [B, L, V]
    lse = torch.logsumexp(z, dim=-1)  # [B, L]
    p = torch.softmax(z, dim=-1)  # [B, L, V]
    return lse - (p * z).sum(dim=-1)  # [B, L]


def chunked_entropy(
    logits: Tensor, chunk_size: int = DEFAULT_CHUNK, temperature: float = 1.0
) -> Tensor:
    """:func:`entropy_from_logits` computed ``chunk_size`` positions at a time.

    Meant for the ``policy/entropy`` metric under ``torch.no_grad()``: the float32 scratch is
    one chunk, not the whole batch. (It stays differentiable, but autograd then keeps every
    chunk's softmax, so it saves memory only without grad.)
    """
    b, length, _ = logits.shape
    out = torch.empty(b, length, dtype=torch.float32, device=logits.device)  # [B, L]
    for rows, cols in _chunks(b, length, chunk_size):
        out[rows, cols] = entropy_from_logits(logits[rows, cols], temperature)  # [b', l']
    return out


class _SelectiveLogSoftmax(torch.autograd.Function):
    """log_softmax(logits)[token] with a chunked forward and a recomputing backward.

    Saves only the logits (which exist anyway) and the ``[B, L]`` logsumexp; the backward
    ``d/dz_v = g * (1[v == token] - softmax(z)_v)`` recomputes softmax chunk by chunk.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, logits: Tensor, token_ids: Tensor, chunk_size: int, temperature: float
    ) -> Tensor:
        b, length, _ = logits.shape
        lse = torch.empty(b, length, dtype=torch.float32, device=logits.device)  # [B, L]
        for rows, cols in _chunks(b, length, chunk_size):
            z = _scaled(logits[rows, cols], temperature)  # [b', l', V]
            lse[rows, cols] = torch.logsumexp(z, dim=-1)  # [b', l']
        picked = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1).float()  # [B, L]
        ctx.save_for_backward(logits, token_ids, lse)
        ctx.chunk_size, ctx.temperature = chunk_size, temperature
        return picked / temperature - lse  # [B, L]

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        logits, token_ids, lse = ctx.saved_tensors
        b, length, _ = logits.shape
        grad = torch.empty_like(logits)  # [B, L, V]
        for rows, cols in _chunks(b, length, ctx.chunk_size):
            # d/dlogits = g / T * (onehot - p); one float32 scratch buffer, updated in place
            g = grad_out[rows, cols].float().unsqueeze(-1) / ctx.temperature  # [b', l', 1]
            dz = _scaled(logits[rows, cols], ctx.temperature)  # [b', l', V]
            dz.sub_(lse[rows, cols].unsqueeze(-1)).exp_().mul_(-g)  # [b', l', V]  -g * p
            dz.scatter_add_(-1, token_ids[rows, cols].unsqueeze(-1), g)  # [b', l', V]
            grad[rows, cols] = dz  # cast to the logits' dtype on copy
        return grad, None, None, None


def selective_log_softmax(
    logits: Tensor, token_ids: Tensor, chunk_size: int = DEFAULT_CHUNK, temperature: float = 1.0
) -> Tensor:
    """Log-probs of ``token_ids`` under ``logits``: ``[B, L, V], [B, L] -> [B, L]`` float32.

    Equal to ``torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]`` but
    with at most ``chunk_size`` positions of float32 scratch in forward and backward.
    ``token_ids`` must be int64 in ``[0, V)``. ``temperature`` divides the logits chunk by
    chunk in float32 (as the sampler does: its log-probs are of the scaled distribution);
    passing it here instead of ``logits / T`` saves a full ``[B, L, V]`` copy.
    """
    _check_temperature(temperature)
    if logits.dim() != 3 or token_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"need logits [B, L, V] and token_ids [B, L], got {tuple(logits.shape)} and "
            f"{tuple(token_ids.shape)}"
        )
    out: Tensor = _SelectiveLogSoftmax.apply(logits, token_ids.long(), chunk_size, temperature)
    return out
