"""Mixed precision: float32 master weights and AdamW state whatever ``model.dtype`` says,
bf16 compute under autocast; ``model.dtype`` is the frozen copies' dtype (docs/recipe.md)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from prorl.config import ConfigError, load_config
from prorl.models import load_policy
from prorl.runtime import load_trainer_policy, reference_copy
from prorl.state import make_optimizer

BF16 = ["model.name=tiny", "model.dtype=bfloat16", "model.bf16=true", "optim.lr=1e-6"]


def _bf16_backward(model: Any, seed: int = 0) -> None:
    """One next-token loss, forward and backward in bf16 autocast (the trainer's compute)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (4, 24), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids, use_cache=False).logits  # [B, T, V]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, T-1, V]
    loss = -logp.gather(-1, ids[:, 1:, None]).mean()
    loss.backward()


def _changed_share(model: Any, optimizer: torch.optim.Optimizer) -> tuple[float, int]:
    """Share of the parameter entries with a non-zero gradient that one optimizer step
    changes in the stored weights, and how many such entries there were."""
    params = [p for p in model.parameters() if p.grad is not None]
    before = [p.detach().clone() for p in params]
    masks = [p.grad != 0 for p in params]
    optimizer.step()
    changed = sum(
        int(((p.detach() != b) & m).sum()) for p, b, m in zip(params, before, masks, strict=True)
    )
    total = sum(int(m.sum()) for m in masks)
    return changed / total, total


def test_bf16_model_dtype_keeps_fp32_master_weights_and_adam_state() -> None:
    cfg = load_config("debug", BF16)
    policy, _ = load_trainer_policy(cfg)
    assert {p.dtype for p in policy.parameters()} == {torch.float32}
    optimizer, _ = make_optimizer(cfg, policy)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
    _bf16_backward(policy)
    share, total = _changed_share(policy, optimizer)
    assert total > 1_000_000  # the tiny model's ~3.4M parameters, nearly all with a gradient
    assert share >= 0.99, f"a fp32 step at lr 1e-6 changed only {share:.1%}"
    assert {p.dtype for p in policy.parameters()} == {torch.float32}
    moments = [s["exp_avg"] for s in optimizer.state.values()]
    assert moments and {m.dtype for m in moments} == {torch.float32}


def test_bf16_adam_step_rounds_most_updates_away() -> None:
    """The contrast, by hand: the same step on bf16 parameters (what model.dtype=bfloat16
    used to mean) leaves most weights unchanged at lr 1e-6."""
    policy, _ = load_policy("tiny", "bfloat16")
    assert {p.dtype for p in policy.parameters()} == {torch.bfloat16}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0)
    _bf16_backward(policy)
    share, _ = _changed_share(policy, optimizer)
    assert share < 0.05, f"bf16 step changed {share:.1%}"


def test_reference_is_stored_in_model_dtype() -> None:
    cfg = load_config("debug", BF16)
    policy, _ = load_trainer_policy(cfg)
    ref = reference_copy(cfg, policy)
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in ref.parameters())
    assert {p.dtype for p in policy.parameters()} == {torch.float32}  # the copy, not it
    # a hard reset copies the fp32 policy into the bf16 reference (load_state_dict casts)
    ref.load_state_dict(policy.state_dict())
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}


def test_fp32_model_dtype_reference_stays_fp32() -> None:
    cfg = load_config("debug", ["model.name=tiny"])
    policy, _ = load_trainer_policy(cfg)
    ref = reference_copy(cfg, policy)
    assert {p.dtype for p in ref.parameters()} == {torch.float32}


def test_unknown_model_dtype_is_refused() -> None:
    with pytest.raises(ConfigError, match="model.dtype"):
        load_config("debug", ["model.dtype=float64"])


@pytest.mark.parametrize("preset", ["r1-distill-1.5b", "prorl-v1-stages"])
def test_gpu_presets_use_bf16_compute_with_bf16_copies(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.model.dtype == "bfloat16" and cfg.model.bf16


def test_vllm_dtype_auto_follows_model_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    from prorl.sampling import vllm as vs

    seen: dict[str, Any] = {}

    def fake_init(self: Any, policy: Any, tokenizer: Any, **kw: Any) -> None:
        seen.update(kw)

    monkeypatch.setattr(vs.VLLMSampler, "__init__", fake_init)
    for overrides, want in [
        (["model.dtype=bfloat16"], "bfloat16"),
        ([], "float32"),
        (["model.dtype=bfloat16", "rollout.vllm_dtype=float32"], "float32"),
    ]:
        cfg = load_config("debug", overrides)
        vs.VLLMSampler.from_config(cfg, None, None)
        assert seen["dtype"] == want, overrides
