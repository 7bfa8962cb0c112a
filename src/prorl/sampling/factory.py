"""The run's sampler from its config: HF generation or a vLLM engine (``rollout.sampler``)."""

from __future__ import annotations

from typing import Any

from prorl.config import Config
from prorl.sampling.base import Sampler


def make_sampler(cfg: Config, policy: Any, tokenizer: Any) -> Sampler:
    if cfg.rollout.sampler == "vllm":
        from prorl.sampling.vllm import VLLMSampler  # vllm itself imported lazily in there

        return VLLMSampler.from_config(cfg, policy, tokenizer)
    from prorl.sampling.hf import HFSampler

    return HFSampler(policy, tokenizer, batch_size=cfg.rollout.batch_size, bf16=cfg.rollout.bf16)
