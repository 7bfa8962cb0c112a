"""algo.mini_batches is the exact number of optimizer steps per rollout batch."""

import pytest

from prorl.rl import plan_minibatches


@pytest.mark.parametrize(
    ("n", "minis", "sizes"),
    [
        (40, 4, [10, 10, 10, 10]),
        (41, 4, [11, 10, 10, 10]),
        (56, 4, [14, 14, 14, 14]),
        (43, 4, [11, 11, 11, 10]),
        (7, 1, [7]),
        (3, 4, [1, 1, 1]),  # fewer sequences than steps: one each
        (0, 4, []),
    ],
)
def test_plan_minibatches(n, minis, sizes):
    plan = plan_minibatches(n, minis)
    assert [len(m) for m in plan] == sizes
    assert [i for m in plan for i in m] == list(range(n))  # contiguous, each once


def test_plan_minibatches_rejects_zero():
    with pytest.raises(ValueError, match="mini_batches must be >= 1"):
        plan_minibatches(8, 0)


def test_update_takes_exactly_mini_batches_optimizer_steps(tmp_path, monkeypatch):
    """40 sequences, micro-batches of 16, 4 mini-batches: 4 AdamW steps (the old rounding
    gave 3 here, and 5-7 for 40-56 sequences with micro-batches of 8)."""
    import torch

    from test_train import _train

    calls = []
    real_step = torch.optim.AdamW.step

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting)
    _train(tmp_path, "steps=1", "data.val_problems=0", "rollout.prompts_per_step=5",
           "rollout.dynamic_sampling=false", "algo.mini_batches=4")  # fmt: skip
    assert len(calls) == 4
