"""Samplers: the swap point between HF generation (CPU, tests) and vLLM (GPU, fast CPU)."""

from prorl.sampling.base import Sampler, derive_seed

__all__ = ["Sampler", "derive_seed"]
