"""model.compile: the trainer's passes through torch.compile (inductor) compute what eager
does. Compiling takes tens of seconds even for the tiny model, hence the slow marker."""

import math

import pytest
import torch

from prorl.models import load_policy
from prorl.policy import compiled, pack, response_logprobs
from test_train import _train

pytestmark = pytest.mark.slow


def _batches():
    # two different shapes: dynamic shapes must serve both without a wrong answer
    a = pack([[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]], [[20, 21, 22], [23], []], pad_id=0)
    b = pack([[30, 31], [32, 33, 34, 35, 36, 37]], [[40, 41, 42, 43, 44], [45, 46]], pad_id=0)
    return a, b


def test_compiled_logprobs_and_gradients_match_eager():
    model, _ = load_policy("tiny")
    assert compiled(model) is compiled(model)  # one wrapper per module
    assert compiled(model)._orig_mod is model  # a torch.compile wrapper, not the module
    for batch in _batches():
        mask = batch.response_mask.bool()
        with torch.no_grad():
            want, _ = response_logprobs(model, batch, 0.7, bf16=False)
            got_eval, _ = response_logprobs(model, batch, 0.7, bf16=False, compile=True)
        torch.testing.assert_close(got_eval[mask], want[mask], atol=1e-4, rtol=1e-4)

        model.zero_grad()
        lp, _ = response_logprobs(model, batch, 0.7, bf16=False)
        (lp * mask).sum().backward()
        want_g = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        got, _ = response_logprobs(model, batch, 0.7, bf16=False, compile=True)
        torch.testing.assert_close(got.detach()[mask], want[mask], atol=1e-4, rtol=1e-4)
        (got * mask).sum().backward()
        for n, p in model.named_parameters():
            if n in want_g:
                # fused kernels sum in another order: compare as vectors (a wrong gradient
                # is off by its own size; the rounding here measured below 2e-5 of it)
                err = float((p.grad - want_g[n]).norm() / want_g[n].norm())
                assert err < 1e-4, (n, err)
    # the compiled wrapper trains the module's own parameters: no copy to keep in sync
    assert {id(p) for p in compiled(model).parameters()} == {id(p) for p in model.parameters()}


def test_training_with_compile_runs_and_learns_the_same_way(tmp_path):
    common = ("steps=2", "algo.kl_coef=1e-3")
    _, eager = _train(tmp_path / "eager", *common)
    _, comp = _train(tmp_path / "comp", *common, "model.compile=true")
    e_steps = [r for r in eager if "train/reward" in r]
    c_steps = [r for r in comp if "train/reward" in r]
    assert [r["step"] for r in c_steps] == [1, 2]
    # step 1 samples from the same weights, and fp32 keeps compiled and eager within rounding
    assert c_steps[0]["train/reward"] == e_steps[0]["train/reward"]
    for key in ("policy/kl", "loss/pg", "policy/entropy", "optim/grad_norm"):
        assert c_steps[0][key] == pytest.approx(e_steps[0][key], rel=1e-3, abs=1e-6), key
        assert math.isfinite(c_steps[1][key]), key
