"""Published evaluation results (prorl.study.published): a model's rows without their texts,
put back into an empty work directory, give the report the same numbers as the originals,
lenient reading included; and the check that a rerun's metrics match the published run's."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from eval_fixtures import write_synthetic
from prorl.evaluate import store
from prorl.evaluate.analysis import load_results
from prorl.study.published import compact_row, publish_model, published_models, restore
from prorl.study.run import first_difference

TASK = "rg/chain_sum"


def _eval(directory: Path) -> Path:
    # 2 models x 2 problems x 3 samples; the texts make the lenient reading differ from the
    # strict reward (the second sample of problem 0 says 7 in prose: lenient, not strict)
    rewards = {
        ("base", TASK): np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
        ("step_000004", TASK): np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]),
    }
    texts = {
        ("base", TASK): [["no", "it is 7", "<answer>7</answer>"], ["5", "x", "y"]],
        ("step_000004", TASK): [["7", "7", "8"], ["3", "4", "x"]],
    }
    return write_synthetic(
        directory,
        rewards,
        {TASK: "arithmetic"},
        texts=texts,
        answers={TASK: ["7", "4"]},
        formatted={k: [[True, False, True], [True, True, False]] for k in rewards},
        floors={k: [{"empty": 0.0, "format": 0.0, "junk": 0.0, "echo": 0.0}] * 2 for k in rewards},
    )


def test_compact_row_drops_texts_and_keeps_the_lenient_reading() -> None:
    row = {
        "index": 0,
        "answer": "7",
        "samples": [
            {"text": "it is 7", "reward": 0.0, "num_tokens": 3},
            {"text": "none", "reward": 0.0, "num_tokens": 1},
        ],
    }
    out = compact_row(row)
    assert out["samples"] == [
        {"reward": 0.0, "num_tokens": 3, "lenient": True, "final": "7"},
        {"reward": 0.0, "num_tokens": 1, "lenient": False, "final": None},
    ]
    assert row["samples"][0]["text"] == "it is 7"  # the input is not changed
    assert compact_row({"answer": "x + y", "samples": [{"text": "1"}]})["samples"] == [
        {"lenient": None}  # no numeric answer: lenient reading undefined, as in the report
    ]


def test_published_models_restore_into_an_empty_work_dir_with_the_same_numbers(
    tmp_path: Path,
) -> None:
    original = _eval(tmp_path / "work-eval")
    dest = tmp_path / "results" / "evals"
    publish_model(original, dest, "base")
    publish_model(original, dest, "step_000004")
    publish_model(original, dest, "base")  # publishing again replaces, never duplicates
    assert published_models(dest) == ["step_000004", "base"]
    gz = dest / "results" / "base" / "rg__chain_sum.jsonl.gz"
    rows = [json.loads(line) for line in gzip.decompress(gz.read_bytes()).splitlines()]
    assert all("text" not in s for r in rows for s in r["samples"])

    fresh = tmp_path / "new-machine" / "eval"
    assert restore(dest, fresh) == ["step_000004", "base"]
    assert restore(dest, fresh) == []  # already there: left alone
    a, b = load_results(original), load_results(fresh)
    for key in (("base", TASK), ("step_000004", TASK)):
        old, new = a.data[key], b.data[key]
        assert np.array_equal(old.rewards, new.rewards)
        assert old.lenient is not None and new.lenient is not None
        assert np.array_equal(old.lenient, new.lenient)
        assert np.array_equal(old.formatted, new.formatted)  # type: ignore[arg-type]
        assert np.array_equal(old.floor_rewards, new.floor_rewards)  # type: ignore[arg-type]
    # hand-checked: base problem 0 says 7 in prose once and in tags once: lenient 2 of 3
    assert b.data[("base", TASK)].lenient.tolist() == [[0, 1, 1], [0, 0, 0]]  # type: ignore[union-attr]


def test_restore_leaves_a_model_in_progress_alone_and_refuses_other_settings(
    tmp_path: Path,
) -> None:
    original = _eval(tmp_path / "a")
    dest = tmp_path / "evals"
    publish_model(original, dest, "step_000004")
    work = _eval(tmp_path / "b")  # holds both models already (say, mid-evaluation)
    before = store.results_path(work, "step_000004", TASK).read_bytes()
    assert restore(dest, work) == []
    assert store.results_path(work, "step_000004", TASK).read_bytes() == before

    other = tmp_path / "c"
    _eval(other)
    man = store.read_manifest(other)
    assert man is not None
    store.write_manifest(other, {**man, "n": 5, "models": []})
    with pytest.raises(ValueError, match="other settings \\(n\\)"):
        restore(dest, other)
    with pytest.raises(ValueError, match="no model 'nope'"):
        publish_model(original, dest, "nope")


def test_first_difference_ignores_machine_metrics_and_names_the_step() -> None:
    published = [
        {"step": 1, "train/reward": 0.5, "time/step_s": 3.0},
        {"step": 2, "train/reward": 0.25, "time/step_s": 3.0},
        {"step": 3, "train/reward": 0.75},
    ]
    same = [
        {"step": 1, "train/reward": 0.5, "time/step_s": 9.0},
        {"step": 2, "train/reward": 0.25, "time/step_s": 1.0},
    ]
    assert first_difference(published, same) is None  # a shorter rerun: the common steps
    other = [*same[:1], {"step": 2, "train/reward": 0.3}, {"step": 3, "train/reward": 0.75}]
    assert first_difference(published, other) == 2
    # a metric only the newer prorl logs, and throughputs, are not differences of the run
    extra_key = [{"step": 1, "train/reward": 0.5, "policy/kl": 0.0, "perf/tokens_per_s": 9.0}]
    assert first_difference(published, extra_key) is None
    assert first_difference(published, [{"step": 3, "train/reward": 0.7}]) == 3
