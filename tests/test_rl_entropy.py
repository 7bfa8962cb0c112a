"""Entropy and selective log-softmax against torch references, chunking, bf16, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical

from prorl.rl import chunked_entropy, entropy_from_logits, selective_log_softmax


def logits_and_ids(b: int = 3, length: int = 5, v: int = 11, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, length, v, generator=gen) * 3).to(dtype)
    ids = torch.randint(0, v, (b, length), generator=gen)
    return logits, ids


def reference_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.double(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def test_entropy_hand_values() -> None:
    # uniform over 4 -> ln 4 = 1.386294; p = [1/4, 3/4] (logits [0, ln 3]) ->
    # -(.25 ln .25 + .75 ln .75) = 0.562335; a logit 1000 above the rest -> 0, not NaN
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3), -1e30, -1e30]]])
    out = entropy_from_logits(logits)[0].tolist()
    assert out == pytest.approx([math.log(4), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))])
    peaked = entropy_from_logits(torch.tensor([[[1000.0, 0.0, 0.0]]]))
    assert peaked.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(peaked).all()


def test_entropy_matches_categorical() -> None:
    logits, _ = logits_and_ids()
    expected = Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected.float())


@pytest.mark.parametrize("chunk", [1, 3, 5, 7, 100])
def test_chunked_entropy_matches_full(chunk: int) -> None:
    logits, _ = logits_and_ids(b=3, length=6)
    view = logits[:, :-1]  # non-contiguous, as in logits[:, :-1] for next-token prediction
    torch.testing.assert_close(chunked_entropy(view, chunk), entropy_from_logits(view))


def test_selective_log_softmax_hand_value() -> None:
    # logits [0, ln 3] -> p = [.25, .75]; log p(token 1) = ln .75 = -0.287682
    logits = torch.tensor([[[0.0, math.log(3)]]])
    out = selective_log_softmax(logits, torch.tensor([[1]]))
    assert out.item() == pytest.approx(math.log(0.75), rel=1e-6)


@pytest.mark.parametrize("chunk", [1, 2, 4, 5, 64])
def test_selective_log_softmax_matches_reference(chunk: int) -> None:
    logits, ids = logits_and_ids(b=3, length=5)
    view, ids_v = logits[:, :-1], ids[:, 1:]
    out = selective_log_softmax(view, ids_v, chunk_size=chunk)
    assert out.dtype == torch.float32 and out.shape == (3, 4)
    torch.testing.assert_close(out, reference_logprobs(view, ids_v).float())


def test_selective_log_softmax_bf16_upcasts() -> None:
    logits, ids = logits_and_ids(b=2, length=4, v=50_000, dtype=torch.bfloat16)
    out = selective_log_softmax(logits, ids, chunk_size=3)
    ref = reference_logprobs(logits, ids)  # same bf16 values, computed in float64
    # float32 accumulation: ~1e-5 off; a bf16 logsumexp would be ~1e-2 off
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=0)


def test_selective_log_softmax_gradient_matches_autograd() -> None:
    logits, ids = logits_and_ids(b=2, length=6, v=9)
    weights = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = logits.clone().requires_grad_(True)
    (selective_log_softmax(a, ids, chunk_size=4).double() * weights).sum().backward()
    b = logits.clone().requires_grad_(True)
    (reference_logprobs(b, ids) * weights).sum().backward()
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


def test_selective_log_softmax_gradient_through_noncontiguous_view() -> None:
    base = logits_and_ids(b=2, length=5, v=7, dtype=torch.float32)[0].requires_grad_(True)
    ids = torch.zeros(2, 4, dtype=torch.long)
    selective_log_softmax(base[:, :-1], ids, chunk_size=3).sum().backward()
    assert base.grad is not None and base.grad[:, -1].eq(0).all()
    # d log p_0 / d z_0 = 1 - p_0 > 0, d / d z_v = -p_v < 0
    assert (base.grad[:, :-1, 0] > 0).all() and (base.grad[:, :-1, 1:] < 0).all()


def test_selective_log_softmax_bf16_gradient_dtype() -> None:
    logits = logits_and_ids(b=1, length=3, v=8, dtype=torch.bfloat16)[0].requires_grad_(True)
    selective_log_softmax(logits, torch.ones(1, 3, dtype=torch.long)).sum().backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16


def test_temperature_inside_equals_dividing_first() -> None:
    # T = 1.2 (the paper's rollout temperature): values and gradients as for logits / 1.2
    logits, ids = logits_and_ids(b=2, length=5, v=13)
    weights = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a = logits.clone().requires_grad_(True)
    out = selective_log_softmax(a, ids, chunk_size=3, temperature=1.2)
    (out.double() * weights).sum().backward()
    b = logits.clone().requires_grad_(True)
    ref = reference_logprobs(b / 1.2, ids)
    (ref * weights).sum().backward()
    torch.testing.assert_close(out.double(), ref.detach(), atol=1e-5, rtol=1e-5)
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
    expected_h = Categorical(logits=logits / 1.2).entropy().float()
    torch.testing.assert_close(chunked_entropy(logits, 4, temperature=1.2), expected_h)
    # hand value: logits [0, 2 ln 3] at T = 2 -> [0, ln 3] -> log p(token 1) = ln .75
    two = torch.tensor([[[0.0, 2 * math.log(3)]]])
    out1 = selective_log_softmax(two, torch.tensor([[1]]), temperature=2.0)
    assert out1.item() == pytest.approx(math.log(0.75), rel=1e-6)


def test_selective_log_softmax_errors() -> None:
    with pytest.raises(ValueError, match=r"logits \[B, L, V\] and token_ids \[B, L\]"):
        selective_log_softmax(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        chunked_entropy(torch.zeros(1, 2, 3), 0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        selective_log_softmax(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), 4, 0.0)
