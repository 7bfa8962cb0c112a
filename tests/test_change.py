"""Paired bootstrap change between two models, on hand-made results."""

from pathlib import Path

import numpy as np
import pytest

from prorl.evaluate.analysis import Results, TaskResult
from prorl.evaluate.change import paired_change


def _tr(model, task, rewards, lenient=None):
    r = np.asarray(rewards, dtype=np.float64)
    uids = tuple(f"{task}:{i}" for i in range(len(r)))
    return TaskResult(
        model,
        task,
        "d",
        uids,
        uids,
        r,
        np.ones_like(r),
        np.zeros_like(r, bool),
        lenient=None if lenient is None else np.asarray(lenient, np.float64),
    )


def _results(data):
    tasks = list(dict.fromkeys(t for _, t in data))
    return Results(
        Path("."), ["base", "final"], tasks, dict.fromkeys(tasks, "d"), 2, [1, 2], 1.0, data
    )


def test_change_point_values_are_macro_averages():
    data = {
        ("base", "a"): _tr("base", "a", [[0, 0], [0, 0], [1, 0], [0, 0]]),  # 1/8
        ("final", "a"): _tr("final", "a", [[1, 1], [0, 1], [1, 0], [0, 0]]),  # 4/8
        ("base", "b"): _tr("base", "b", [[0.5, 0], [0, 0]]),  # partial credit is no success
        ("final", "b"): _tr("final", "b", [[1, 0], [1, 1]]),  # 3/4
    }
    c = paired_change(_results(data), "base", "final", n_boot=500)
    assert c.before.value == pytest.approx((1 / 8 + 0) / 2)
    assert c.after.value == pytest.approx((4 / 8 + 3 / 4) / 2)
    assert c.delta.value == pytest.approx(c.after.value - c.before.value)
    assert c.problems == 6 and c.tasks == ("a", "b")
    assert c.delta.lo <= c.delta.value <= c.delta.hi
    assert c.before.lo <= c.before.value <= c.before.hi


def test_identical_models_change_exactly_zero():
    same = [[1, 0], [0, 0], [1, 1]]
    data = {("base", "a"): _tr("base", "a", same), ("final", "a"): _tr("final", "a", same)}
    c = paired_change(_results(data), "base", "final", n_boot=200)
    # paired: every replicate draws the same problems for both, so the change is always 0
    assert (c.delta.value, c.delta.lo, c.delta.hi) == (0.0, 0.0, 0.0)


def test_consistent_gain_excludes_zero_and_lenient_base():
    base = [[0, 0]] * 20
    final = [[1, 1]] * 15 + [[0, 0]] * 5
    lenient_base = [[1, 0]] * 20  # the base knew half of the answers, without the format
    data = {
        ("base", "a"): _tr("base", "a", base, lenient=lenient_base),
        ("final", "a"): _tr("final", "a", final),
    }
    res = _results(data)
    c = paired_change(res, "base", "final", n_boot=1000)
    assert c.delta.value == 0.75 and c.delta.lo > 0
    vs_lenient = paired_change(res, "base", "final", before_measure="lenient", n_boot=1000)
    assert vs_lenient.before.value == 0.5 and vs_lenient.delta.value == pytest.approx(0.25)
    # no numeric references on the final side: lenient undefined there
    assert paired_change(res, "base", "final", after_measure="lenient") is None
    with pytest.raises(ValueError, match="measure must be one of"):
        paired_change(res, "base", "final", before_measure="x")
