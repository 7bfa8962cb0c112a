"""head_logprobs (log-probs and entropy from hidden states and LM head weights, chunked)
against the naive full-logits computation, and response_logprobs' use of it."""

import pytest
import torch
import torch.nn.functional as F

import prorl.policy as policy_mod
from prorl.models import load_policy
from prorl.policy import pack, response_logprobs
from prorl.rl import entropy_from_logits
from prorl.rl.head import chunk_rows, head_logprobs


def _naive(hidden, weight, ids, bias=None, temperature=1.0):
    logits = F.linear(hidden, weight, bias).float() / temperature  # [..., V]
    lp = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    return lp, entropy_from_logits(logits.detach())


def _inputs(b=3, length=10, h=16, v=50, bias=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, length, h, generator=gen, requires_grad=True)
    weight = (torch.randn(v, h, generator=gen) * 0.5).requires_grad_()
    bb = torch.randn(v, generator=gen).requires_grad_() if bias else None
    ids = torch.randint(0, v, (b, length), generator=gen)
    upstream = torch.randn(b, length, generator=gen)  # a non-uniform loss weighting
    return hidden, weight, bb, ids, upstream


def _grads(fn, hidden, weight, bias, upstream):
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None
    lp, ent = fn()
    (lp * upstream).sum().backward()
    grads = [t.grad.clone() for t in (hidden, weight, bias) if t is not None]
    return lp.detach(), ent, grads


@pytest.mark.parametrize(
    ("chunk", "temperature", "bias"),
    [
        (1, 1.0, False),
        (7, 0.7, False),
        (30, 1.3, True),
        (1000, 1.0, True),
    ],
)
def test_values_entropy_and_gradients_match_naive(chunk, temperature, bias):
    hidden, weight, b, ids, up = _inputs(bias=bias)
    want_lp, want_ent, want_g = _grads(
        lambda: _naive(hidden, weight, ids, b, temperature), hidden, weight, b, up
    )
    got_lp, got_ent, got_g = _grads(
        lambda: head_logprobs(
            hidden, weight, ids, bias=b, temperature=temperature, with_entropy=True, chunk=chunk
        ),
        hidden,
        weight,
        b,
        up,
    )
    torch.testing.assert_close(got_lp, want_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_ent, want_ent, atol=1e-5, rtol=1e-5)
    assert got_ent is not None and not got_ent.requires_grad  # a metric, not in the loss
    for got, want in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_entropy_is_of_the_tempered_distribution():
    hidden, weight, _, ids, _ = _inputs()
    _, ent = head_logprobs(hidden, weight, ids, temperature=0.5, with_entropy=True, chunk=4)
    want = entropy_from_logits(F.linear(hidden, weight).detach(), temperature=0.5)
    torch.testing.assert_close(ent, want, atol=1e-5, rtol=1e-5)
    assert head_logprobs(hidden, weight, ids)[1] is None


def test_bf16_autocast_matches_autocast_linear():
    """Under autocast the head's matmuls run in bf16 exactly as F.linear's would."""
    hidden, weight, _, ids, up = _inputs(h=32, v=40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_lp, _, want_g = _grads(lambda: _naive(hidden, weight, ids), hidden, weight, None, up)
        got_lp, _, got_g = _grads(
            lambda: head_logprobs(hidden, weight, ids, chunk=5), hidden, weight, None, up
        )
    assert got_lp.dtype == torch.float32
    torch.testing.assert_close(got_lp, want_lp, atol=1e-4, rtol=1e-4)
    for got, want in zip(got_g, want_g, strict=True):
        assert got.dtype == torch.float32  # the fp32 master weights get an fp32 gradient
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)  # bf16 rounding


def test_no_logits_sized_tensor_is_kept_for_the_backward():
    """What autograd saves is the hidden states, the weight and [N] vectors: nothing of the
    [N, V] size of the logits (which the naive computation keeps)."""
    n, h, v = 64, 8, 500
    hidden, weight, _, ids, _ = _inputs(b=1, length=n, h=h, v=v)
    saved: list[int] = []

    def pack_hook(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        lp, _ = head_logprobs(hidden, weight, ids, with_entropy=True, chunk=16)
    assert saved and max(saved) <= max(n * h, v * h) < n * v
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        _naive(hidden, weight, ids)
    assert max(saved) >= n * v  # the check would catch a computation that keeps logits
    lp.sum().backward()
    assert hidden.grad is not None and weight.grad is not None


def test_chunk_rows_fit_the_budget_and_errors():
    assert chunk_rows(151_936) == (256 << 20) // (4 * 151_936)
    assert chunk_rows(10**9) == 16  # a floor: never a chunk of 0 rows
    hidden, weight, _, ids, _ = _inputs()
    with pytest.raises(ValueError, match="temperature"):
        head_logprobs(hidden, weight, ids, temperature=0.0)
    with pytest.raises(ValueError, match="token_ids"):
        head_logprobs(hidden, weight, ids[:, :-1])


def _batch():
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    responses = [[20, 21, 22], [23], []]
    return pack(prompts, responses, pad_id=0)


def _full_logits_path(monkeypatch):
    """response_logprobs as before the chunked head: the model's full logits."""
    monkeypatch.setattr(policy_mod, "CHUNKED_HEAD", frozenset())


def test_tiny_model_logprobs_entropy_and_gradients_unchanged(monkeypatch):
    model, _ = load_policy("tiny")
    assert policy_mod.chunked_head_supported(model)
    batch = _batch()
    mask = batch.response_mask.float()
    names = [n for n, _ in model.named_parameters()]

    def run():
        model.zero_grad()
        lp, ent = response_logprobs(model, batch, 0.7, bf16=False, with_entropy=True)
        (lp * mask).sum().backward()
        return lp.detach(), ent, {n: p.grad.clone() for n, p in model.named_parameters()}

    got_lp, got_ent, got_g = run()
    assert isinstance(model.lm_head, torch.nn.Linear)  # the head is put back after the pass
    assert [n for n, _ in model.named_parameters()] == names
    with monkeypatch.context() as m:
        _full_logits_path(m)
        assert not policy_mod.chunked_head_supported(model)
        want_lp, want_ent, want_g = run()
    torch.testing.assert_close(got_lp, want_lp, atol=1e-5, rtol=1e-5)
    # entropy sums 49,152 terms in another order: measured 2e-5 (chunked) and 7e-5 (full
    # logits) from a float64 reference
    torch.testing.assert_close(got_ent, want_ent, atol=2e-4, rtol=0)
    for n in names:
        torch.testing.assert_close(got_g[n], want_g[n], atol=1e-5, rtol=1e-4, msg=n)


def test_head_restored_when_the_forward_fails(monkeypatch):
    model, _ = load_policy("tiny")
    head = model.lm_head

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.model, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        response_logprobs(model, _batch(), 1.0, bf16=False)
    assert model.lm_head is head
