"""Dynamic sampling: which groups are informative, refill up to a target, saturation."""

from __future__ import annotations

import pytest
import torch

from prorl.rl import DynamicBatch, informative_groups, is_informative


def test_informative_groups_list_and_tensor() -> None:
    # groups of 3: [1,1,1] all right, [0,1,0] mixed, [0,0,0] all wrong, [.5,.5,.5+1e-12] equal
    # within tol, [.2,.2,.9] mixed
    rewards = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0.5, 0.5, 0.5 + 1e-12, 0.2, 0.2, 0.9]
    assert informative_groups(rewards, 3) == [1, 4]
    assert informative_groups(torch.tensor(rewards, dtype=torch.float64), 3) == [1, 4]
    assert informative_groups(rewards, 3, tol=0.0) == [1, 3, 4]
    assert informative_groups([], 4) == []
    assert informative_groups([1.0, 0.0], 1) == []  # one sample cannot differ from itself


def test_informative_groups_bad_layout() -> None:
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        informative_groups([1, 0, 1], 4)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        informative_groups([1], 0)


def test_is_informative() -> None:
    assert is_informative([0.0, 1.0]) and not is_informative([0.3, 0.3]) and not is_informative([])


def test_refill_until_full_keeps_first_in_arrival_order() -> None:
    batch: DynamicBatch[str] = DynamicBatch(target_groups=3, max_rounds=5)
    assert batch.need == 3 and not batch.full and not batch.exhausted and batch.warning() is None
    # round 1: a and c informative, b all-correct
    batch.add(["a", "b", "c"], [[1, 0], [1, 1], [0, 0.5]])
    assert batch.groups == ["a", "c"] and batch.need == 1 and not batch.full
    # round 2: d all-wrong, e and f informative; only e fits, f is overflow
    batch.add(["d", "e", "f"], [[0, 0], [1, 0], [0, 1]])
    assert batch.groups == ["a", "c", "e"]
    assert batch.full and batch.need == 0 and batch.rounds == 2 and not batch.exhausted
    assert (batch.seen, batch.dropped, batch.overflow) == (6, 2, 1)
    assert batch.warning() is None
    # kept_frac = informative / seen = 4 / 6
    m = batch.metrics()
    assert m["filter/kept_frac"] == pytest.approx(4 / 6)
    assert m["filter/groups"] == 3.0 and m["filter/rounds"] == 2.0 and m["filter/overflow"] == 1.0
    assert all(isinstance(v, float) for v in m.values())


def test_groups_returns_a_copy() -> None:
    batch: DynamicBatch[int] = DynamicBatch(2, 1)
    batch.add([7], [[0, 1]])
    batch.groups.append(99)
    assert batch.groups == [7]


def test_saturation_shrinks_batch_and_warns_without_raising() -> None:
    batch: DynamicBatch[int] = DynamicBatch(target_groups=4, max_rounds=2)
    batch.add([0, 1], [[1, 1], [0, 1]])
    assert batch.warning() is None  # a round left: not yet a problem
    batch.add([2, 3], [[0, 0], [1, 1]])
    assert batch.exhausted and not batch.full
    assert batch.groups == [1] and batch.need == 3
    msg = batch.warning()
    assert msg is not None
    assert "1/4 informative groups" in msg and "2 generation round(s)" in msg
    assert "3 with all-equal rewards" in msg and "smaller batch" in msg
    batch.add([4], [[0, 1]])  # adding past the cap is allowed, never raises
    assert batch.rounds == 3 and batch.groups == [1, 4]


def test_empty_batch_is_allowed_and_says_skip() -> None:
    batch: DynamicBatch[int] = DynamicBatch(target_groups=2, max_rounds=1)
    batch.add([0, 1], [[1, 1, 1], [0, 0, 0]])
    assert batch.groups == [] and batch.exhausted and batch.kept_frac == 0.0
    msg = batch.warning()
    assert msg is not None and "0/2" in msg and "skipping this update" in msg


def test_no_refill_mode_is_one_round() -> None:
    # max_rounds=1: DAPO filtering without refill (the paper does not say ProRL refilled)
    batch: DynamicBatch[int] = DynamicBatch(target_groups=2, max_rounds=1)
    batch.add([0, 1, 2], [[1, 0], [1, 0], [1, 0]])
    assert batch.full and batch.exhausted and batch.warning() is None and batch.groups == [0, 1]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="target_groups"):
        DynamicBatch(0, 1)
    with pytest.raises(ValueError, match="max_rounds"):
        DynamicBatch(1, 0)
    with pytest.raises(ValueError, match="2 groups but 1 reward lists"):
        DynamicBatch(1, 1).add([0, 1], [[1, 0]])
    assert DynamicBatch(1, 1).kept_frac == 0.0  # nothing seen: 0, no ZeroDivisionError
