"""Sampler-vs-trainer log-prob mismatch, truncated IS and weight syncs in the real train step
(tiny model, HF sampler). A wrapper shifts the sampler's reported log-probs by a known amount:
a stand-in for a rollout engine (vLLM) whose numbers disagree with the trainer's."""

import dataclasses
import math

import pytest

from prorl import runtime
from prorl.config import ConfigError, load_config
from prorl.metrics import read_jsonl
from prorl.runtime import run_training
from prorl.sampling.hf import HFSampler
from test_train import TOY


class ShiftedSampler:
    def __init__(self, inner: HFSampler, shift: float) -> None:
        self.inner, self.shift, self.syncs = inner, shift, 0

    def generate(self, prompts, n, params, seed):
        out = self.inner.generate(prompts, n, params, seed)
        return [
            [dataclasses.replace(s, logprobs=tuple(x + self.shift for x in s.logprobs)) for s in g]
            for g in out
        ]

    def update_weights(self, model) -> None:
        self.syncs += 1
        self.inner.update_weights(model)


def _run(tmp_path, monkeypatch, shift, *overrides):
    made = []

    def make(cfg, policy, tok):
        made.append(ShiftedSampler(HFSampler(policy, tok, bf16=False), shift))
        return made[-1]

    monkeypatch.setattr(runtime, "make_sampler", make)
    run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    cfg = load_config(None, [*TOY, "data.val_problems=1", "eval.n=1", f"run_dir={run}", *overrides])
    run_training(cfg, live=False)
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "train/reward" in r]
    return rows, made[0]


def test_hf_sampler_matches_trainer_in_fp32_and_syncs_after_each_update(tmp_path, monkeypatch):
    rows, sampler = _run(tmp_path, monkeypatch, 0.0, "steps=3", "optim.lr=1e-2")
    updated = [r for r in rows if "loss/pg" in r]
    assert len(updated) >= 2
    assert sampler.syncs == len(updated)  # one sync per optimizer update, none otherwise
    for r in updated:  # same model, same fp32 maths: only summation-order noise
        assert r["rollout/logprob_mismatch_abs"] < 1e-4
        assert r["rollout/tis_weight_mean"] == pytest.approx(1.0, abs=1e-4)
        assert r["rollout/tis_clipped_frac"] == 0.0


def test_truncated_is_weights_the_loss_and_reports_mismatch(tmp_path, monkeypatch):
    # The engine claims 10x the trainer's probability for every token: ratio 0.1, clamped
    # to is_low = 0.5, so every token's policy-gradient term is halved.
    shift = math.log(10.0)
    plain, _ = _run(tmp_path, monkeypatch, shift, "steps=1")
    tis, _ = _run(tmp_path, monkeypatch, shift, "steps=1", "algo.truncated_is=true")
    for r in (plain[0], tis[0]):
        assert r["rollout/logprob_mismatch_abs"] == pytest.approx(shift, rel=1e-4)
        assert r["rollout/tis_weight_mean"] == pytest.approx(0.5)
        assert r["rollout/tis_clipped_frac"] == 1.0
    # Same seeds, same rollouts; at step 1 the KL gradient is 0 (policy == reference), so
    # the whole gradient (its norm is taken before clipping) is the halved pg term.
    assert plain[0]["optim/grad_norm"] > 1e-3
    assert tis[0]["optim/grad_norm"] == pytest.approx(0.5 * plain[0]["optim/grad_norm"], rel=1e-4)


def test_truncated_is_needs_trainer_old_logprobs():
    with pytest.raises(ConfigError, match="algo.truncated_is"):
        load_config(None, ["algo.truncated_is=true", "algo.old_logprobs=sampler"])
    with pytest.raises(ConfigError, match="algo.is_low"):
        load_config(None, ["algo.is_low=1.5"])
