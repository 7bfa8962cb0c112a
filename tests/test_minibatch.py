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
    _train(
        tmp_path,
        "steps=1",
        "data.val_problems=0",
        "rollout.prompts_per_step=5",
        "rollout.dynamic_sampling=false",
        "algo.mini_batches=4",
    )
    assert len(calls) == 4


def test_plan_update_cuts_minibatches_into_micro_batches():
    from prorl.rl import plan_update

    plan = plan_update(11, 2, 4)  # 6 + 5 sequences, micro-batches of at most 4
    assert [m.ids for m in plan] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert [[u.ids for u in m.micro] for m in plan] == [
        [[0, 1, 2, 3], [4, 5]],
        [[6, 7, 8, 9], [10]],
    ]
    assert all(u.weight == 1.0 for m in plan for u in m.micro)
    assert plan_update(0, 2, 4) == []


def test_plan_update_takes_a_ranks_shard():
    """Rank 1 of 2 gets the second half of each mini-batch; a rank with fewer micro-batches
    than the other pads with a weight-0 pass (DDP needs equal backward counts)."""
    from prorl.rl import plan_update
    from prorl.scale.learner import shard_micro_batches

    def rank(r: int):
        return lambda ids, size: shard_micro_batches(ids, size, r, 2)

    plan0, plan1 = plan_update(10, 2, 2, rank(0)), plan_update(10, 2, 2, rank(1))
    assert [m.ids for m in plan0] == [m.ids for m in plan1] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [[(u.ids, u.weight) for u in m.micro] for m in plan0] == [
        [([0, 1], 1.0), ([0], 0.0)],
        [([5, 6], 1.0), ([5], 0.0)],
    ]
    # rank 1 holds 3 of 5: two micro-batches; rank 0 (2 of 5) pads to two with weight 0
    assert [[(u.ids, u.weight) for u in m.micro] for m in plan1] == [
        [([2, 3], 1.0), ([4], 1.0)],
        [([7, 8], 1.0), ([9], 1.0)],
    ]
