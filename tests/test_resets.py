"""Reset triggers on synthetic metric traces, and resets in the training loop."""

from types import SimpleNamespace

import pytest
import torch

from prorl.config import ResetConfig, load_config
from prorl.metrics import read_jsonl
from prorl.resets import ResetPolicy
from prorl.runtime import run_training

HEALTHY = [  # a run that learns: KL small, entropy stable, validation improving
    {"policy/kl": 0.001 * i, "loss/pg": 0.1, "policy/entropy": 2.0 - 0.01 * i}
    | ({"eval/pass@1": 0.2 + 0.05 * i} if i % 2 == 0 else {})
    for i in range(1, 21)
]


def _fire(cfg: ResetConfig, trace, kl_coef=0.0):
    policy = ResetPolicy(cfg, kl_coef)
    out = []
    for step, m in enumerate(trace, start=1):
        d = policy.observe(step, m)
        if d:
            out.append((step, d))
    return out


ARMED = ResetConfig(patience=2, drop=0.1, kl_max=0.5, kl_share_max=0.9, entropy_min=0.5)


def test_healthy_trace_never_resets():
    assert _fire(ARMED, HEALTHY, kl_coef=1e-3) == []


def test_every_n_steps():
    assert [s for s, _ in _fire(ResetConfig(every=4), HEALTHY)] == [4, 8, 12, 16, 20]


def test_validation_plateau_fires_after_patience_evaluations():
    scores = [0.3, 0.5, 0.45, 0.49, 0.5, 0.6]  # best 0.5 at eval 2; evals 3, 4 do not beat it
    trace = [{"eval/pass@1": v} for v in scores]
    fired = _fire(ResetConfig(patience=2), trace)
    assert [s for s, _ in fired] == [4]
    assert fired[0][1].reason == "validation not improved for 2 evaluations"
    assert fired[0][1].metrics == {"eval/score": 0.49, "eval/best": 0.5}
    # the trace restarts after a reset: 0.5 then 0.6 is a fresh improvement, no second reset


def test_validation_drop_fires_below_best_minus_margin():
    trace = [{"eval/pass@1": v} for v in (0.5, 0.45, 0.35)]
    fired = _fire(ResetConfig(drop=0.1), trace)
    assert [s for s, _ in fired] == [3]  # 0.5 - 0.45 = 0.05 is within the margin
    assert "fell 0.15 below its best" in fired[0][1].reason


def test_validation_blend_weights_task_pass1():
    cfg = ResetConfig(patience=1, eval_blend={"eval/a/pass@1": 3.0, "eval/b/pass@1": 1.0})
    policy = ResetPolicy(cfg)
    assert policy.eval_score({"eval/a/pass@1": 1.0, "eval/b/pass@1": 0.0}) == 0.75
    assert policy.eval_score({"eval/a/pass@1": 1.0}) is None  # b missing: no evaluation
    # a up 0.1 (x3), b down 0.4 (x1): the blend falls (0.3 -> 0.275) although a improved
    trace = [
        {"eval/a/pass@1": 0.2, "eval/b/pass@1": 0.6, "eval/pass@1": 0.4},
        {"eval/a/pass@1": 0.3, "eval/b/pass@1": 0.2, "eval/pass@1": 0.9},
    ]
    assert [s for s, _ in _fire(cfg, trace)] == [2]


def test_kl_value_and_kl_share():
    trace = [{"policy/kl": 0.2, "loss/pg": 0.1}, {"policy/kl": 0.7, "loss/pg": 0.1}]
    fired = _fire(ResetConfig(kl_max=0.5), trace)
    assert [s for s, _ in fired] == [2] and fired[0][1].metrics == {"policy/kl": 0.7}
    # kl_coef * kl = 0.05 * 0.7 = 0.035; share = 0.035 / (0.01 + 0.035) = 0.778
    trace = [{"policy/kl": 0.1, "loss/pg": -0.01}, {"policy/kl": 0.7, "loss/pg": -0.01}]
    fired = _fire(ResetConfig(kl_share_max=0.7), trace, kl_coef=0.05)
    assert [s for s, _ in fired] == [2]
    assert fired[0][1].metrics["kl_share"] == pytest.approx(0.035 / 0.045)


def test_entropy_floor_with_cooldown():
    trace = [{"policy/entropy": e} for e in (1.0, 0.4, 0.3, 0.3, 0.3, 0.2)]
    fired = _fire(ResetConfig(entropy_min=0.5, cooldown=2), trace)
    # the start counts as a reset: step 2 is in its cooldown; 4-5 in the cooldown of step 3
    assert [s for s, _ in fired] == [3, 6]
    assert fired[0][1].reason == "policy/entropy 0.3 < 0.5"
    assert [s for s, _ in _fire(ResetConfig(entropy_min=0.5), trace)] == [2, 3, 4, 5, 6]


def test_state_round_trip_continues_identically():
    trace = [{"eval/pass@1": v} for v in (0.3, 0.5, 0.45, 0.4, 0.6, 0.55, 0.5)]
    cfg = ResetConfig(patience=2, drop=0.2)
    whole = _fire(cfg, trace)
    first = ResetPolicy(cfg)
    for step, m in enumerate(trace[:3], start=1):
        first.observe(step, m)
    second = ResetPolicy(cfg)
    second.load_state_dict(first.state_dict())
    rest = [(s, d) for s, m in enumerate(trace[3:], start=4) if (d := second.observe(s, m))]
    assert rest == [(s, d) for s, d in whole if s > 3]


def test_reset_reinitialises_optimizer_when_asked():
    from prorl.state import make_optimizer
    from prorl.train import reset_reference

    cfg = load_config(None, ["reset.reset_optimizer=true"])
    model = torch.nn.Linear(3, 2)
    ref = torch.nn.Linear(3, 2)
    opt, sched = make_optimizer(cfg, model)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert len(opt.state) == 2
    state = SimpleNamespace(
        cfg=cfg,
        stage=SimpleNamespace(cfg=cfg),
        policy=model,
        ref=ref,
        optimizer=opt,
        scheduler=sched,
        producer=None,  # no steps drawn ahead
    )
    reset_reference(state, reset_optimizer=False)
    assert state.optimizer is opt and len(opt.state) == 2
    assert torch.equal(ref.weight, model.weight)
    reset_reference(state, reset_optimizer=True)
    assert len(state.optimizer.state) == 0 and state.optimizer is not opt


def test_kl_trigger_resets_in_training_and_kl_is_zero_next_step(tmp_path):
    from test_checkpoint import TOY

    run = tmp_path / "run"
    over = [
        *TOY,
        "steps=4",
        "reset.every=0",
        "reset.kl_max=1e-9",
        "eval.every=0",
        "checkpoint.every=0",
        f"run_dir={run}",
    ]
    run_training(load_config(None, over), live=False)
    rows = {r["step"]: r for r in read_jsonl(run / "metrics.jsonl")}
    events = [e for e in read_jsonl(run / "events.jsonl") if e["event"] == "reset"]
    # Step 1 starts at pi == pi_ref: KL 0 (one micro-batch per step, measured before the
    # update), no reset. Step 2 drifted and resets, so step 3 measures KL exactly 0 again;
    # step 4 drifts but is the last step, where a reset would change nothing.
    assert rows[1]["policy/kl"] == 0.0 and "reset" not in rows[1]
    assert rows[2]["policy/kl"] > 0 and rows[2]["reset"] == 1.0
    assert rows[3]["policy/kl"] == 0.0 and "reset" not in rows[3]
    assert rows[4]["policy/kl"] > 0 and "reset" not in rows[4]
    assert [e["step"] for e in events] == [2]
    assert events[0]["reason"].startswith("policy/kl 0.") and events[0]["reason"].endswith("1e-09")
    assert events[0]["cause"] == {"policy/kl": rows[2]["policy/kl"]}
    assert events[0]["reset_optimizer"] is True and events[0]["reference"] == "policy"


def test_reset_to_best_kept_checkpoint(tmp_path, tiny):
    import copy

    from prorl import checkpoint as ckpt
    from prorl.resets import ResetDecision
    from prorl.state import make_optimizer
    from prorl.train import apply_reset

    model, tok = tiny
    best = copy.deepcopy(model)
    ckpt.save_checkpoint(tmp_path, 1, best, tok, None, {}, {})
    policy, ref = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        policy.model.embed_tokens.weight.add_(1.0)  # the policy moved on after step 1
        ref.model.embed_tokens.weight.mul_(0.0)
    cfg = load_config(None, ["reset.target=best", "reset.reset_optimizer=false"])
    resetter = ResetPolicy(cfg.reset.__class__(target="best", patience=1))
    assert resetter.observe(1, {"eval/pass@1": 0.9}) is None
    decision = resetter.observe(2, {"eval/pass@1": 0.1})
    assert decision is not None and decision.best_step == 1
    opt, sched = make_optimizer(cfg, policy)
    state = SimpleNamespace(
        cfg=cfg,
        stage=SimpleNamespace(cfg=cfg),
        policy=policy,
        ref=ref,
        optimizer=opt,
        scheduler=sched,
        producer=None,  # no steps drawn ahead
    )
    fields = apply_reset(state, decision, tmp_path)
    assert fields["reference"] == "checkpoint step_00000001"
    assert torch.equal(ref.model.embed_tokens.weight, best.model.embed_tokens.weight)
    assert state.optimizer is opt
    # the best step's checkpoint was pruned: fall back to the current policy
    gone = ResetDecision(("test",), best_step=7)
    assert apply_reset(state, gone, tmp_path)["reference"] == "policy"
    assert torch.equal(ref.model.embed_tokens.weight, policy.model.embed_tokens.weight)
