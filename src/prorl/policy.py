"""Forward passes of the policy (or reference) over prompt + response token sequences."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prorl.config import ConfigError
from prorl.rl import chunked_entropy, selective_log_softmax
from prorl.rl.head import head_logprobs


@dataclass(frozen=True)
class PackedBatch:
    """Prompts left-padded to P, responses right-padded to R: ``input_ids`` is [B, P+R] and
    the logits at positions P-1 .. P+R-2 predict the R response tokens."""

    input_ids: torch.Tensor  # [B, P+R]
    attention_mask: torch.Tensor  # [B, P+R]
    position_ids: torch.Tensor  # [B, P+R]
    response_ids: torch.Tensor  # [B, R]
    response_mask: torch.Tensor  # [B, R] 1 on real response tokens
    prompt_width: int

    def to(self, device: torch.device) -> PackedBatch:
        """The same batch on ``device`` (itself when it is already there)."""
        if self.input_ids.device == device:
            return self
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
                if f.name != "prompt_width"
            },
        )


def pack(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> PackedBatch:
    b = len(prompts)
    p_w = max(len(p) for p in prompts)
    r_w = max(1, max(len(r) for r in responses))
    ids = torch.full((b, p_w + r_w), pad_id, dtype=torch.long)  # [B, P+R]
    mask = torch.zeros((b, p_w + r_w), dtype=torch.long)  # [B, P+R]
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[i, p_w - len(p) : p_w] = torch.tensor(list(p), dtype=torch.long)
        ids[i, p_w : p_w + len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, p_w - len(p) : p_w + len(r)] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, P+R]
    return PackedBatch(ids, mask, positions, ids[:, p_w:], mask[:, p_w:].clone(), p_w)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX).

    Without it torch emulates bf16 matmuls: measured 0.3 GFLOP/s against 123 GFLOP/s in
    fp32 on a 2-core Zen machine without avx512_bf16, which made training 10x slower.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(bf16: bool, device_type: str = "cpu") -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when asked for: on a GPU always, on the CPU when it has bf16 hardware;
    else a no-op."""
    if bf16 and device_type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if bf16 and cpu_has_fast_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if bf16 and not _warned:
        _warn_no_bf16()
    return contextlib.nullcontext()


_warned = False


def _warn_no_bf16() -> None:
    global _warned
    _warned = True
    logging.getLogger("prorl").warning(
        "bf16 autocast requested but this CPU has no bf16 hardware (avx512_bf16/amx): "
        "running in fp32, which is much faster here"
    )


@contextlib.contextmanager
def trainer_attention(model: Any) -> Iterator[None]:
    """Eager attention for the trainer's passes on CPU.

    torch's CPU flash-attention backward took 26% of a SmolLM2 forward/backward at 154
    tokens (more than all the matmuls of the attention layers), eager attention's backward a
    few percent: 1.2-1.5x faster per micro-batch (docs/benchmarks.md). Every trainer pass
    uses it, with or without gradients: the policy, pi_old and the reference must be computed
    the same way, or a fresh reset's KL and the first ratio are not exactly 0 and 1. A DDP
    wrapper is switched through the module it wraps. GPUs keep the model's implementation.
    The update holds it around its backward passes too: gradient checkpointing recomputes
    the forward there, and torch refuses a recomputation that saves other tensors.
    """
    inner = getattr(model, "module", model)
    current = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    if current in (None, "eager") or policy_device(model).type != "cpu":
        yield
        return
    with attention_implementation(inner, "eager"):
        yield


@contextlib.contextmanager
def attention_implementation(model: Any, name: str) -> Iterator[None]:
    """Run ``model`` with the transformers attention implementation ``name`` for the
    duration, then switch back to the one it had."""
    current = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def policy_device(model: Any) -> torch.device:
    """Where ``model``'s parameters are (the local device of an FSDP2 shard)."""
    try:
        p = next(model.parameters())
    except (StopIteration, AttributeError):
        return torch.device("cpu")
    local = getattr(p, "to_local", None)  # a DTensor: its device is the mesh's
    return p.device if local is None else local().device


_COMPILED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def compiled(model: Any) -> Any:
    """The ``torch.compile`` wrapper of ``model`` (inductor, dynamic shapes: micro-batches
    differ in length), made once per module and sharing its parameters.

    Measured on SmolLM2-135M, one thread, bf16 autocast: a forward 1.7x and a
    forward/backward 1.4x faster than eager, after a one-off compile of 1-5 CPU minutes
    per graph (policy with gradients, policy without, reference). Inductor fuses and rounds
    differently from eager, and the graph with gradients differently from the one without:
    log-probs move by bf16 noise (~0.06 nats/token mean on random tokens), so a fresh reset's
    KL or a recomputed pi_old ratio are that close to 0 and 1 rather than exact."""
    net = _COMPILED.get(model)
    if net is None:
        net = torch.compile(model, dynamic=True)
        _COMPILED[model] = net
    return net


def require_compiler() -> None:
    """torch.compile's CPU backend (inductor) builds C++ kernels: check for a compiler before
    a run writes anything, instead of failing at the first update."""
    if os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return
    raise ConfigError(
        "model.compile: torch.compile needs a C++ compiler on CPU and none was found "
        "(g++, c++, clang++ or $CXX); install one (e.g. apt install g++) or set "
        "model.compile=false"
    )


def response_logprobs(
    model: Any,
    batch: PackedBatch,
    temperature: float,
    bf16: bool,
    with_entropy: bool = False,
    compile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``[B, R]`` (float32) of the response tokens under ``model`` with logits
    divided by ``temperature`` (as the sampler does), and optionally the entropy ``[B, R]``
    of that distribution (detached: it is a metric, not part of the loss). ``compile`` runs
    the model through :func:`compiled`.

    For the architectures in ``CHUNKED_HEAD`` the logits are never materialised: the LM
    head is applied chunk by chunk inside :func:`prorl.rl.head.head_logprobs` (docs/gpu.md,
    "Memory"); other models go through their full ``[B, R, V]`` logits."""
    device = policy_device(model)
    batch = batch.to(device)  # a no-op when the caller packed it there
    r_w = batch.response_ids.shape[1]
    net = compiled(model) if compile else model
    inner = getattr(model, "module", model)  # a DDP wrapper's module
    with (
        autocast(bf16, device.type),
        trainer_attention(model),
        logprob_head(inner, batch.response_ids, temperature, with_entropy) as head,
    ):
        out = net(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
            # the LM head only where a response token is predicted: at 140 prompt + 64
            # response tokens it was ~15% of the FLOPs spent on prompt positions for nothing
            logits_to_keep=r_w + 1,
        ).logits  # [B, R] log-probs with the chunked head, else [B, R+1, V] logits
    if head is not None:
        return out, head.take_entropy()
    logits = out[:, :-1]  # [B, R, V] predictions of the response tokens
    # temperature applied chunk by chunk in float32 inside: no full [B, R, V] copy
    logprobs = selective_log_softmax(logits, batch.response_ids, temperature=temperature)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = chunked_entropy(logits.detach(), temperature=temperature)  # [B, R]
    return logprobs, entropy


# Causal LMs whose forward applies ``self.lm_head`` (an nn.Linear) last, to the final normed
# hidden states, and returns its output as the logits untouched (transformers 5.x; no logit
# soft-capping or scaling after it, as Gemma or Granite have): their head can be swapped for
# the chunked log-prob computation. Matched through the MRO, since FSDP2 subclasses them.
CHUNKED_HEAD = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)


class _LogProbHead(torch.nn.Module):
    """Stands in for a model's LM head during a trainer pass: it is given the hidden states
    ``[B, R+1, H]`` the head would get and returns the response log-probs ``[B, R]`` in the
    logits' place.

    Swapping the head, rather than calling the base model and the head separately, keeps the
    whole pass inside the model's own forward: DDP's forward hooks (gradient sync) and FSDP2's
    (the head's weight is gathered only during the forward) still apply. One instance per
    model is kept and re-armed per pass, so a compiled forward's guards stay valid; its
    forward runs eagerly there (a graph break)."""

    def __init__(self, head: torch.nn.Linear) -> None:
        super().__init__()
        # a plain attribute, not a submodule: the model's parameter names do not change
        object.__setattr__(self, "head", head)
        self.request: tuple[torch.Tensor, float, bool] | None = None
        self.entropy: torch.Tensor | None = None

    @torch.compiler.disable
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        assert self.request is not None, "armed by logprob_head()"
        ids, temperature, with_entropy = self.request
        head: torch.nn.Linear = self.head  # type: ignore[assignment]
        logprobs, self.entropy = head_logprobs(
            hidden[:, :-1],
            head.weight,
            ids,
            bias=head.bias,
            temperature=temperature,
            with_entropy=with_entropy,
        )
        return logprobs

    def take_entropy(self) -> torch.Tensor | None:
        """The last pass's entropy, dropping the module's reference to it."""
        entropy, self.entropy = self.entropy, None
        return entropy


_HEADS: weakref.WeakKeyDictionary[Any, _LogProbHead] = weakref.WeakKeyDictionary()


def chunked_head_supported(model: Any) -> bool:
    """Whether :func:`response_logprobs` computes ``model``'s log-probs without logits."""
    names = {c.__name__ for c in type(model).__mro__}
    head = getattr(model, "lm_head", None)
    return bool(names & CHUNKED_HEAD) and isinstance(head, (torch.nn.Linear, _LogProbHead))


@contextlib.contextmanager
def logprob_head(
    model: Any, response_ids: torch.Tensor, temperature: float, with_entropy: bool
) -> Iterator[_LogProbHead | None]:
    """For the duration, ``model.lm_head`` returns the log-probs of ``response_ids``
    (see :class:`_LogProbHead`); yields None, changing nothing, for other models."""
    if not chunked_head_supported(model):
        yield None
        return
    current = model.lm_head
    if isinstance(current, _LogProbHead):
        raise RuntimeError("response_logprobs is not re-entrant: the LM head is already swapped")
    head = _HEADS.get(model)
    if head is None or head.head is not current:
        head = _LogProbHead(current)
        _HEADS[model] = head
    head.request, head.entropy = (response_ids, temperature, with_entropy), None
    model.lm_head = head
    try:
        yield head
    finally:
        model.lm_head = current
        head.request = None
