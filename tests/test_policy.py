"""response_logprobs against a plain full-logits computation, in and out of autograd."""

import torch

from prorl.models import load_policy
from prorl.policy import pack, response_logprobs


def _reference(model, batch, temperature):
    """The straightforward way: all logits, log_softmax, gather at the response columns."""
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits  # [B, P+R, V]
    p = batch.prompt_width
    lp = torch.log_softmax(logits[:, p - 1 : -1].float() / temperature, -1)  # [B, R, V]
    return lp.gather(-1, batch.response_ids[..., None])[..., 0]  # [B, R]


def _batch():
    # ragged prompts (left padding) and ragged responses (right padding), one empty response
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    responses = [[20, 21, 22], [23], []]
    return pack(prompts, responses, pad_id=0)


def test_logprobs_match_full_logits_with_and_without_grad():
    model, _ = load_policy("tiny")
    batch = _batch()
    want = _reference(model, batch, 0.7)
    mask = batch.response_mask.bool()
    with torch.no_grad():
        got_eval, _ = response_logprobs(model, batch, 0.7, bf16=False)
    got_train, ent = response_logprobs(model, batch, 0.7, bf16=False, with_entropy=True)
    assert got_train.requires_grad and ent is not None
    torch.testing.assert_close(got_eval[mask], want[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_train.detach()[mask], want[mask], atol=1e-5, rtol=1e-5)
    # the training pass switches attention implementation only for its own duration
    assert model.config._attn_implementation == "sdpa"


def test_gradient_matches_full_logits_gradient():
    model, _ = load_policy("tiny")
    batch = _batch()
    mask = batch.response_mask.float()
    got, _ = response_logprobs(model, batch, 1.0, bf16=False)
    (got * mask).sum().backward()
    g_fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
    ).logits
    p = batch.prompt_width
    lp = torch.log_softmax(logits[:, p - 1 : -1].float(), -1)
    lp = lp.gather(-1, batch.response_ids[..., None])[..., 0]
    (lp * mask).sum().backward()
    for n, param in model.named_parameters():
        torch.testing.assert_close(g_fast[n], param.grad, atol=1e-5, rtol=1e-4, msg=n)
