"""prorl eval: storage, resume, bad input (fake sampler), and end to end on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from prorl.cli import main
from prorl.evaluate import store
from prorl.evaluate.report import write_report
from prorl.evaluate.runner import (
    EvalSettings,
    default_scorer,
    evaluate_checkpoint,
    run_evaluation,
)
from prorl.sampling.base import derive_seed
from prorl.tasks import register_task
from prorl.tasks.base import UnknownTaskError
from prorl.tasks.selfcheck import TRIVIAL
from prorl.types import Example, Sample, SamplingParams


class _FakeTask:
    """Answer is always "yes"; 10 test problems."""

    domain = "logic"

    def __init__(self, name: str = "evaltest/fake") -> None:
        self.name = name

    def size(self, split: str = "train") -> int | None:
        return 10

    def example(self, index: int, split: str = "train") -> Example:
        prompt = ({"role": "user", "content": f"problem {index}"},)
        return Example(f"{self.name}:{split}:{index}", self.name, prompt, "yes", {"i": index})

    def score(self, response: str, example: Example) -> float:
        return 1.0 if response == example.answer else 0.0

    def format_answer(self, content: str) -> str:
        return content

    def reference_response(self, example: Example) -> str | None:
        return example.answer


register_task("evaltest/fake", domain="logic")(lambda: _FakeTask())
register_task("evaltest/other", domain="math")(lambda: _FakeTask("evaltest/other"))


class _FakeSampler:
    """Deterministic in (seed, sample index) like the real samplers; records what it made."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail_after = fail_after

    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams, seed: Any
    ) -> list[list[Sample]]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # the user pressing Ctrl-C mid-evaluation
        self.calls.append([p[0] for p in prompts])
        return [
            [
                Sample((1, 2), (-0.1, -0.2), "yes" if derive_seed(s, j) % 3 == 0 else "no", "stop")
                for j in range(n)
            ]
            for s in seed
        ]


def _encode(tokenizer: Any, examples: Sequence[Example]) -> list[list[int]]:
    return [[int(ex.meta["i"])] for ex in examples]


def _run(out: Path, sampler: _FakeSampler, **kw: Any) -> dict[str, int]:
    settings = EvalSettings(n=kw.pop("n", 8), problems=6, chunk=2, **kw)
    return run_evaluation(
        ["base=fake-model"],
        ["evaltest/fake", "evaltest/other"],
        out,
        settings,
        loader=lambda spec: (sampler, None, _encode),
        scorer=default_scorer,
        log=None,
    )


def _rows(out: Path, task: str = "evaltest/fake") -> list[dict[str, Any]]:
    return store.read_rows(store.results_path(out, "base", task))


def test_stores_every_sample_with_its_reward(tmp_path: Path) -> None:
    sampler = _FakeSampler()
    assert _run(tmp_path / "ev", sampler) == {"base": 12}
    rows = _rows(tmp_path / "ev")
    assert [r["index"] for r in rows] == list(range(6))
    assert all(len(r["samples"]) == 8 for r in rows)
    s = rows[0]["samples"][0]
    assert set(s) == {"text", "num_tokens", "finish_reason", "reward", "reason", "formatted"}
    assert s["num_tokens"] == 2 and s["reward"] == (1.0 if s["text"] == "yes" else 0.0)
    man = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert man["models"] == [{"label": "base", "spec": "fake-model"}]
    assert [t["name"] for t in man["tasks"]] == ["evaltest/fake", "evaltest/other"]
    assert man["sampling"] == {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 512}


def test_resume_does_not_regenerate_finished_problems(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    with pytest.raises(KeyboardInterrupt):
        _run(out, _FakeSampler(fail_after=2))  # 2 chunks of 2 problems, then Ctrl-C
    assert [r["index"] for r in _rows(out)] == [0, 1, 2, 3]
    # a crash in the middle of writing problem 4's line
    with store.results_path(out, "base", "evaltest/fake").open("a") as f:
        f.write('{"index": 4, "samples": [{"te')
    resumed = _FakeSampler()
    assert _run(out, resumed) == {"base": 2 + 6}
    assert resumed.calls[0] == [4, 5]  # only the missing problems of the first task
    # identical to an uninterrupted evaluation
    _run(tmp_path / "full", _FakeSampler())
    for task in ("evaltest/fake", "evaltest/other"):
        assert _rows(out, task) == _rows(tmp_path / "full", task)
    assert _run(out, (idle := _FakeSampler())) == {"base": 0} and idle.calls == []


def test_conflicting_settings_refused_without_touching_results(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    _run(out, _FakeSampler())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="other settings.*n: stored 8, asked 4"):
        _run(out, _FakeSampler(), n=4)
    with pytest.raises(ValueError, match="temperature"):
        _run(out, _FakeSampler(), temperature=1.0)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "new").exists()


def test_unknown_task_fails_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    with pytest.raises(UnknownTaskError, match="nope"):
        run_evaluation(["m"], ["evaltest/fake", "nope"], out, EvalSettings(n=2), log=None)
    assert not out.exists()


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "ev"
    _run(out, _FakeSampler())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    cases = [
        ["eval", "--model", "tiny", "--tasks", "no_such_task", "--out", str(out)],
        [
            "eval",
            "--model",
            str(tmp_path / "missing"),
            "--tasks",
            "evaltest/fake",
            "--n",
            "8",
            "--out",
            str(out),
        ],
        [
            "eval",
            "--model",
            "tiny",
            "--tasks",
            "evaltest/fake",
            "--n",
            "4",
            "--k",
            "1,8",
            "--out",
            str(out),
        ],
        [
            "eval",
            "--model",
            str(tmp_path / "empty"),
            "--tasks",
            "evaltest/fake",
            "--n",
            "8",
            "--out",
            str(out),
        ],  # exists, but holds no model
        ["report", str(tmp_path / "empty")],
        [
            "eval",
            "--model",
            "tiny",
            "--tasks",
            "evaltest/fake",
            "--out",
            str(out),
            "--device",
            "tpu",
        ],
    ]
    if not torch.cuda.is_available():  # refused before the model loads or anything is written
        cases.append(
            [
                "eval",
                "--model",
                "tiny",
                "--tasks",
                "evaltest/fake",
                "--out",
                str(tmp_path / "new"),
                "--device",
                "cuda",
            ]
        )
    (tmp_path / "empty").mkdir()
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"prorl {argv[0]}: error: "), err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # and from a real process
    proc = subprocess.run(
        [sys.executable, "-m", "prorl.cli", "report", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "is not a directory" in proc.stderr


def test_label_clash_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    _run(out, _FakeSampler())
    with pytest.raises(ValueError, match="already holds results of 'fake-model'"):
        run_evaluation(
            ["base=other"],
            ["evaltest/fake"],
            out,
            EvalSettings(n=8, problems=6, chunk=2),
            loader=lambda s: (_FakeSampler(), None, _encode),
            scorer=default_scorer,
            log=None,
        )


def test_evaluate_checkpoint_for_training_returns_metrics(tmp_path: Path) -> None:
    settings = EvalSettings(n=4, problems=3, chunk=2)
    run_eval_dir = tmp_path / "run" / "eval"
    for step in (0, 100):
        m = evaluate_checkpoint(
            _FakeSampler(),
            None,
            _encode,
            ["evaltest/fake"],
            run_eval_dir,
            f"step_{step:06d}",
            settings,
        )
        assert set(m) == {
            "eval/evaltest/fake/pass@1",
            "eval/evaltest/fake/pass@2",
            "eval/evaltest/fake/pass@4",
            "eval/evaltest/fake/mean_reward",
            "eval/evaltest/fake/floor",
        }
        rows = store.read_rows(
            store.results_path(run_eval_dir, f"step_{step:06d}", "evaltest/fake")
        )
        rewards = [s["reward"] for r in rows for s in r["samples"]]
        # binary rewards: the success rate and the mean reward agree
        assert m["eval/evaltest/fake/pass@1"] == pytest.approx(sum(rewards) / len(rewards))
        assert m["eval/evaltest/fake/mean_reward"] == pytest.approx(sum(rewards) / len(rewards))
        # the null floor: every row scored the four trivial responses (all 0 here)
        assert [r["floor"] for r in rows] == [dict.fromkeys(TRIVIAL, 0.0)] * len(rows)
        assert m["eval/evaltest/fake/floor"] == 0.0
    html, _ = write_report(tmp_path / "run", n_boot=20)
    assert "step_000100" in html.read_text()


def test_tiny_model_eval_then_report_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    tasks = ["rg/leg_counting", "rg/basic_arithmetic"]
    argv = [
        "eval",
        "--model",
        "tiny",
        "--tasks",
        ",".join(tasks),
        "--n",
        "4",
        "--problems",
        "2",
        "--max-new-tokens",
        "16",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert main(["report", str(out)]) == 0
    html, md = (out / "report.html").read_text(), (out / "summary.md").read_text()
    for task in tasks:
        assert task in html and task in md
        rows = store.read_rows(store.results_path(out, "tiny", task))
        assert [r["index"] for r in rows] == [0, 1] and all(len(r["samples"]) == 4 for r in rows)
        samples = [s for r in rows for s in r["samples"]]
        assert all(0 < s["num_tokens"] <= 16 for s in samples)
        # a random-init model never writes <answer> tags: scored, as a format failure
        assert all(s["reward"] == 0.0 and s["reason"] == "format" for s in samples)
    assert "data:image/png;base64," in html


def test_model_files_copy_a_view_of_what_is_done(tmp_path: Path) -> None:
    """What a learner rank > 0 gets from rank 0 before a validation: the same stored rows
    (so the same problems are skipped), nothing more, and no folder when nothing is stored."""
    from prorl.evaluate import store

    main, scratch = tmp_path / "main", tmp_path / "scratch"
    store.append_rows(store.results_path(main, "step_000000", "rg/leg_counting"), [{"index": 0}])
    store.append_rows(store.results_path(main, "step_000000", "toy-even"), [{"index": 3}])
    stale = store.results_path(scratch, "step_000000", "gone")
    store.append_rows(stale, [{"index": 9}])
    files = store.read_model_files(main, "step_000000")
    assert sorted(files) == ["rg__leg_counting.jsonl", "toy-even.jsonl"]
    store.write_model_files(scratch, "step_000000", files)
    assert store.read_model_files(scratch, "step_000000") == files and not stale.exists()
    assert store.read_rows(store.results_path(scratch, "step_000000", "toy-even")) == [{"index": 3}]
    assert store.read_model_files(main, "step_000002") == {}
    store.write_model_files(scratch, "step_000002", {})
    assert not (scratch / store.RESULTS / "step_000002").exists()


class _LeakyTask(_FakeTask):
    """Scores the empty response as correct: the self-check must catch it."""

    def score(self, response: str, example: Example) -> float:
        return 1.0 if response in ("", example.answer) else 0.0


register_task("evaltest/leaky", domain="logic")(lambda: _LeakyTask("evaltest/leaky"))


def test_eval_self_check_refuses_or_excludes_a_leaky_task(tmp_path: Path) -> None:
    settings = EvalSettings(n=2, problems=2, chunk=2)
    args = dict(loader=lambda s: (_FakeSampler(), None, _encode), scorer=default_scorer)
    with pytest.raises(ValueError, match=r"evaltest/leaky: the empty response scores 1"):
        run_evaluation(
            ["m"], ["evaltest/fake", "evaltest/leaky"], tmp_path / "a", settings, log=None, **args
        )
    assert not (tmp_path / "a").exists()  # refused before anything was written
    said: list[str] = []
    new = run_evaluation(
        ["m"],
        ["evaltest/fake", "evaltest/leaky"],
        tmp_path / "b",
        settings,
        log=said.append,
        self_check="exclude",
        **args,
    )
    assert new == {"m": 2} and any("leaving out evaltest/leaky" in line for line in said)
    assert [t["name"] for t in store.read_manifest(tmp_path / "b")["tasks"]] == ["evaltest/fake"]


def test_pool_scorer_rebuilds_tasks_with_their_settings() -> None:
    """Verifier workers rebuild a task by name: without its settings an answer: last_number
    task would be scored as a tag task, and every untagged right answer would be 0."""
    from prorl.evaluate.runner import pool_scorer
    from prorl.scoring import VerifierPool
    from prorl.tasks import get_task

    settings = {"answer": "last_number", "min_terms": 2, "max_terms": 2}
    task = get_task("rg/chain_sum", **settings)
    ex = task.example(0, "test")
    right, wrong = f"so the sum is {ex.answer}", f"so the sum is {int(ex.answer) + 1}"
    pool = VerifierPool(timeout_s=10)
    try:
        with_settings = pool_scorer(pool, {"rg/chain_sum": settings})(task, ex, [right, wrong])
        without = pool_scorer(pool)(task, ex, [right])
    finally:
        pool.close()
    assert [s.reward for s in with_settings] == [1.0, 0.0]
    assert without[0].reward == 0.0 and without[0].reason == "format"  # the tag reading


def test_eval_task_config_stores_settings_and_refuses_others(tmp_path: Path) -> None:
    cfg = tmp_path / "tasks.yaml"
    cfg.write_text(
        "data:\n  tasks:\n"
        "    - name: rg/chain_sum\n"
        "      settings: {answer: last_number, min_terms: 2, max_terms: 2}\n"
        "  val_tasks:\n"
        "    - name: rg/products\n"
        "      settings: {answer: last_number}\n"
    )
    out = tmp_path / "ev"
    base = ["eval", "--model", "tiny", "--n", "2", "--problems", "1", "--max-new-tokens", "4"]
    assert main([*base, "--task-config", str(cfg), "--out", str(out)]) == 0
    man = store.read_manifest(out)
    assert man is not None
    assert [(t["name"], t["domain"], t.get("settings")) for t in man["tasks"]] == [
        ("rg/chain_sum", "arithmetic", {"answer": "last_number", "min_terms": 2, "max_terms": 2}),
        ("rg/products", "arithmetic", {"answer": "last_number"}),
    ]
    before = store.results_path(out, "tiny", "rg/chain_sum").read_text()
    # the same task name with default settings: refused, nothing touched
    assert main([*base, "--tasks", "rg/chain_sum", "--out", str(out)]) == 2
    assert store.results_path(out, "tiny", "rg/chain_sum").read_text() == before
    # a subset of the config's tasks, and a name the config lacks
    assert (
        main([*base, "--task-config", str(cfg), "--tasks", "rg/products", "--out", str(out)]) == 0
    )
    assert main([*base, "--task-config", str(cfg), "--tasks", "rg/lcm", "--out", str(out)]) == 2
    assert main([*base, "--out", str(out)]) == 2  # neither --tasks nor --task-config
