"""rollout.vllm_sleep without a GPU: the order of vLLM's sleep/wake calls around a step."""

import pytest
import torch

from prorl.models import load_policy
from prorl.types import SamplingParams
from test_vllm import small_llama

pytestmark = pytest.mark.vllm


class RecordingLLM:
    """Stands in for vllm.LLM to check the order of sleep/wake calls (GPU-only in vLLM)."""

    def __init__(self):
        self.calls = []

    def generate(self, requests, sampling, use_tqdm=False):
        from types import SimpleNamespace

        self.calls.append("generate")
        out = SimpleNamespace(token_ids=[5], logprobs=[{5: SimpleNamespace(logprob=-1.0)}])
        return [SimpleNamespace(outputs=[out]) for _ in requests]

    def sleep(self, level):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags):
        self.calls.append(f"wake_up({','.join(tags)})")

    def collective_rpc(self, method, kwargs):
        self.calls.append(method)
        list(kwargs["weights_iterator"])

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")


def test_sleep_mode_releases_memory_between_generate_and_update():
    """The bookkeeping of rollout.vllm_sleep, without a GPU: sleep after each generate, wake
    the weights alone to load new ones, wake the KV cache before the next generate; a
    generate with no update in between (all groups filtered) wakes everything."""
    pytest.importorskip("vllm")
    from prorl.sampling.vllm import VLLMSampler

    _, tok = load_policy("tiny")
    model = small_llama(tok)
    sampler = object.__new__(VLLMSampler)
    sampler.llm, sampler.sleep, sampler._asleep = RecordingLLM(), True, set()
    sampler.tokenizer, sampler.eos_ids, sampler.dtype = tok, [tok.eos_token_id], torch.float32
    prompts, params = [[1, 2, 3]], SamplingParams(1.0, 1.0, 4)
    sampler.generate(prompts, 2, params, 0)
    sampler.update_weights(model)
    sampler.generate(prompts, 2, params, 0)
    sampler.generate(prompts, 2, params, 0)
    assert sampler.llm.calls == [
        "generate",
        "sleep(1)",
        "wake_up(weights)",
        "reload_weights",
        "reset_prefix_cache",
        "wake_up(kv_cache)",
        "generate",
        "sleep(1)",
        "wake_up(kv_cache,weights)",
        "generate",
        "sleep(1)",
    ]


def test_cuda_cache_emptied_after_sleep_and_before_each_wake(monkeypatch):
    """With CUDA (faked here), PyTorch's cached blocks go back to the driver right after vLLM
    sleeps (the update gets the sampling's leftovers) and right before each wake-up (vLLM's
    own allocator gets what the trainer freed)."""
    pytest.importorskip("vllm")
    from prorl.sampling.vllm import VLLMSampler

    _, tok = load_policy("tiny")
    model = small_llama(tok)
    sampler = object.__new__(VLLMSampler)
    llm = RecordingLLM()
    sampler.llm, sampler.sleep, sampler._asleep = llm, True, set()
    sampler.tokenizer, sampler.eos_ids, sampler.dtype = tok, [tok.eos_token_id], torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: llm.calls.append("empty_cache"))
    prompts, params = [[1, 2, 3]], SamplingParams(1.0, 1.0, 4)
    sampler.generate(prompts, 2, params, 0)
    sampler.update_weights(model)
    sampler.generate(prompts, 2, params, 0)
    assert llm.calls == [
        "generate",
        "sleep(1)",
        "empty_cache",
        "empty_cache",
        "wake_up(weights)",
        "reload_weights",
        "reset_prefix_cache",
        "empty_cache",
        "wake_up(kv_cache)",
        "generate",
        "sleep(1)",
        "empty_cache",
    ]


def test_no_cuda_no_empty_cache(monkeypatch):
    """On the CPU the release is a no-op: torch.cuda.empty_cache is never called."""
    from prorl.sampling import vllm as vllm_mod

    called = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: called.append(1))
    vllm_mod._release_cached_blocks()
    assert called == []
