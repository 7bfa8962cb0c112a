"""File tasks: schemas, routing to verifiers, custom reward functions, splits, errors."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from prorl.tasks import get_task
from prorl.tasks.files import FileTask, score_row
from prorl.types import Example, Score
from prorl.verify import list_verifiers, registry
from test_data_loaders import VERL_ROWS, write_saved_dataset, write_verl_parquet

# Each fake verifier returns a distinct reward, so a score shows which one was called.
FAKE_REWARDS = {"math": 0.1, "stem": 0.2, "stem_mc": 0.3, "code": 0.4, "ifeval": 0.5}


@pytest.fixture()
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Example]]]:
    """Registers fake verifiers under the real names for one test, then restores the
    registry (real verifiers, once they exist, come back untouched)."""
    list_verifiers()  # load the real ones first so they are restored afterwards
    calls: list[tuple[str, Example]] = []
    for name, reward in FAKE_REWARDS.items():

        def fake(response: str, example: Example, name: str = name, reward: float = reward):
            calls.append((name, example))
            return reward

        monkeypatch.setitem(registry._VERIFIERS, name, fake)
    yield calls


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


MIXED = [
    {"question": "2+2?", "answer": 4, "data_source": "openai/gsm8k"},
    {"question": "Which gas? A) O2 B) N2", "answer": "B", "data_source": "Idavidrein/gpqa"},
    {"question": "Entropy of mixing?", "answer": "R ln 2", "data_source": "scp-116k"},
    {
        "prompt": "Use 3 words.",
        "instruction_id_list": ["length:words"],
        "kwargs": [{"num_words": 3, "relation": None}],
        "data_source": "google/IFEval",
    },
    {
        "prompt": "def add(a, b):",
        "test": "assert add(1, 2) == 3",
        "entry_point": "add",
        "data_source": "openai_humaneval",
    },
    {
        "question": "Sum input.",
        "input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]}),
        "data_source": "codeparrot/apps",
    },
    {"question": "Prove it.", "answer": "done", "data_source": "my_logic", "ability": "math"},
]


def test_routes_each_row_by_data_source(tmp_path: Path, fakes: list) -> None:
    task = get_task("file", path=jsonl(tmp_path / "mixed.jsonl", MIXED), val_fraction=0.0)
    assert task.size("train") == len(MIXED) and task.domain == "mixed"
    examples = [task.example(i) for i in range(task.size())]
    routed = [e.meta["verifier"] for e in examples]
    # gpqa's single-letter key is multiple choice; scp's free text is plain stem; the last
    # row's data_source names nothing, so veRL's `ability` decides.
    assert routed == ["math", "stem_mc", "stem", "ifeval", "code", "code", "math"]
    domains = [e.meta["domain"] for e in examples]
    assert domains[:4] == ["math", "stem", "stem", "instruction_following"]
    scores = [task.score("anything", e) for e in examples]
    assert [s.reward for s in scores] == [FAKE_REWARDS[v] for v in routed]
    assert [name for name, _ in fakes] == routed


def test_example_fields_for_each_schema(tmp_path: Path, fakes: list) -> None:
    task = get_task("file", path=jsonl(tmp_path / "mixed.jsonl", MIXED), val_fraction=0.0)
    gsm, _, _, ifeval, humaneval, apps, _ = (task.example(i) for i in range(len(MIXED)))
    assert gsm.prompt == ({"role": "user", "content": "2+2?"},) and gsm.answer == "4"
    assert gsm.meta["origin"] == f"{tmp_path / 'mixed.jsonl'}:1" and gsm.meta["line"] == 1
    # datasets-style None padding in IFEval kwargs is dropped.
    assert ifeval.meta["kwargs"] == [{"num_words": 3}]
    assert json.loads(ifeval.answer) == {
        "instruction_id_list": ["length:words"],
        "kwargs": [{"num_words": 3}],
    }
    assert json.loads(humaneval.answer) == {"test": "assert add(1, 2) == 3", "entry_point": "add"}
    assert apps.meta["tests"] == {"inputs": ["1 2\n"], "outputs": ["3\n"]}
    assert json.loads(apps.answer) == apps.meta["tests"]


def test_verl_parquet_prompt_kept_unchanged(tmp_path: Path, fakes: list) -> None:
    f = write_verl_parquet(tmp_path / "train.parquet", VERL_ROWS)
    task = get_task("file", path=str(f), val_fraction=0.0, system_prompt="ignored for chats")
    ex = task.example(0)
    assert ex.prompt == tuple(VERL_ROWS[0]["prompt"])
    assert ex.answer == "5" and ex.meta["verifier"] == "math" and task.domain == "math"
    assert ex.meta["extra_info"] == {"split": "train", "index": 0}
    assert ex.meta["data_source"] == "openai/gsm8k" and ex.meta["row"] == 0
    assert ex.meta["origin"] == f"{f}:row 0"


def test_saved_dataset_folder_as_task(tmp_path: Path, fakes: list) -> None:
    folder = write_saved_dataset(tmp_path / "ds", [[{"problem": "x?", "solution": "7"}]])
    task = get_task("math", path=str(folder), system_prompt="Think.", val_fraction=0.0)
    ex = task.example(0)
    assert ex.prompt == ({"role": "system", "content": "Think."}, {"role": "user", "content": "x?"})
    assert (task.name, task.domain, ex.answer) == ("math", "math", "7")


def test_overrides_and_explicit_verifier(tmp_path: Path, fakes: list) -> None:
    rows = [
        {"question": "a", "answer": "1", "data_source": "openai/gsm8k"},
        {"question": "b", "answer": "2", "data_source": "house_quiz"},
    ]
    path = jsonl(tmp_path / "r.jsonl", rows)
    # The map wins over defaults (gsm8k -> code here); verifier= covers the rest.
    task = get_task(
        "file", path=path, data_source_map="gsm8k=code", verifier="stem", val_fraction=0.0
    )
    assert [task.example(i).meta["verifier"] for i in range(2)] == ["code", "stem"]
    # A named wrapper forces its verifier on every row.
    wrapped = get_task("ifeval", path=path, val_fraction=0.0)
    assert {wrapped.example(i).meta["verifier"] for i in range(2)} == {"ifeval"}
    assert wrapped.domain == "instruction_following"
    with pytest.raises(ValueError, match="unknown verifier 'nope'"):
        get_task("file", path=path, verifier="nope")


def test_unroutable_and_malformed_rows(tmp_path: Path, fakes: list) -> None:
    rows = [
        '{"question": "ok", "answer": "1", "data_source": "gsm8k"}',
        '{"question": "no answer here", "data_source": "gsm8k"}',
        '{"question": "who?", "answer": "x", "data_source": "mystery"}',
        "{broken",
        '{"answer": "no prompt", "data_source": "gsm8k"}',
        '{"question": "bad tests", "input_output": "{oops", "data_source": "apps"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n")
    task = get_task("file", path=str(path), on_error="skip", val_fraction=0.0)
    assert task.size() == 1
    # In file order, whichever stage (JSON parsing, schema, routing) found the problem.
    assert [(p.location.index, p.message.split(":")[0]) for p in task.problems] == [
        (2, "no answer"),
        (3, "no verifier for data_source 'mystery'"),
        (4, "invalid JSON"),
        (5, "no prompt"),
        (6, "'input_output' is not valid JSON"),
    ]
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: no answer"):
        get_task("file", path=str(path), on_error="raise")
    with pytest.raises(
        ValueError,
        match="no usable training rows.*6 malformed.*:1: verifier 'nonexistent' is not registered",
    ):
        get_task(
            "file",
            path=str(tmp_path / "bad.jsonl"),
            on_error="skip",
            limit=1,
            data_source_map="gsm8k=nonexistent",
        )


def test_skip_summary_logged_once(
    tmp_path: Path, fakes: list, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"question": "q", "answer": "1", "data_source": "gsm8k"}\nx\ny\n')
    with caplog.at_level("WARNING", logger="prorl.tasks.files"):
        get_task("file", path=str(path), on_error="skip")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "skipped 2 malformed rows" in warnings[0]
    assert f"{path}:2" in warnings[0]


REWARD_FILE = """
def compute_score(data_source, solution_str, ground_truth, extra_info):
    if solution_str == "boom":
        raise RuntimeError("bug in user code")
    if solution_str == "neg":
        return -1.0
    hit = solution_str.strip() == str(ground_truth)
    return {"score": 1.0 if hit else 0.25, "source": data_source, "idx": extra_info["index"]}
"""


def test_custom_reward_fn(tmp_path: Path) -> None:
    (tmp_path / "my_reward.py").write_text(REWARD_FILE)
    f = write_verl_parquet(tmp_path / "t.parquet", VERL_ROWS)
    spec = f"{tmp_path / 'my_reward.py'}:compute_score"
    task = get_task("file", path=str(f), reward_fn=spec, val_fraction=0.0)
    ex = task.example(1)
    good = task.score("16", ex)
    assert good == Score(1.0, "ok", {"source": "openai/gsm8k", "idx": 1})
    assert task.score("15", ex).reward == 0.25
    neg = task.score("neg", ex)
    assert (neg.reward, neg.details["raw_score"]) == (0.0, -1.0)
    assert task.score("boom", ex).reason == "INFRA_ERROR"
    # score_row needs only the example, so a worker process can score without the task.
    assert pickle.loads(pickle.dumps(ex)).meta["reward_fn"] == spec
    assert score_row("16", ex).reward == 1.0
    assert isinstance(pickle.loads(pickle.dumps(task)), FileTask)


def test_reward_fn_errors(tmp_path: Path) -> None:
    f = str(write_verl_parquet(tmp_path / "t.parquet", VERL_ROWS))
    (tmp_path / "r.py").write_text(REWARD_FILE)
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    cases = {
        f"{tmp_path / 'missing.py'}:compute_score": "missing.py.*does not exist",
        f"{tmp_path / 'r.py'}:score": "no function 'score'.*compute_score",
        f"{tmp_path / 'broken.py'}:f": "failed to import",
        "no_colon.py": "path/to/file.py:function",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message):
            get_task("file", path=f, reward_fn=spec)


def test_hash_splits_are_disjoint_deduped_and_order_free(tmp_path: Path, fakes: list) -> None:
    rows = [
        {"question": f"What is {i} + {i}?", "answer": str(2 * i), "data_source": "gsm"}
        for i in range(300)
    ]
    dupes = [dict(r, question=r["question"].replace(" ", "  ")) for r in rows[:40]]
    a = get_task(
        "file", path=jsonl(tmp_path / "a.jsonl", rows + dupes), val_fraction=0.2, test_fraction=0.1
    )
    b = get_task(
        "file",
        path=jsonl(tmp_path / "b.jsonl", (rows + dupes)[::-1]),
        val_fraction=0.2,
        test_fraction=0.1,
    )

    def questions(task: FileTask, split: str) -> set[str]:
        # Whitespace-normalised: file b keeps the double-spaced copy it meets first.
        return {" ".join(task.example(i, split).question.split()) for i in range(task.size(split))}

    sizes = {s: a.size(s) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 300 and a.duplicates == 40  # whitespace variants dropped
    assert 30 <= sizes["val"] <= 90 and 10 <= sizes["test"] <= 50  # 60 and 30 expected
    tr, va, te = (questions(a, s) for s in ("train", "val", "test"))
    assert not (tr & va or tr & te or va & te)
    # The assignment depends on content, not on position in the file.
    assert all(questions(b, s) == questions(a, s) for s in ("train", "val", "test"))
    # Another seed gives another assignment.
    c = get_task("file", path=str(tmp_path / "a.jsonl"), val_fraction=0.2, seed=1)
    assert questions(c, "val") != va


def test_explicit_val_file_wins_over_training_copies(tmp_path: Path, fakes: list) -> None:
    rows = [{"question": f"q{i}", "answer": "1", "data_source": "gsm"} for i in range(10)]
    train = jsonl(tmp_path / "train.jsonl", rows)
    val = jsonl(tmp_path / "val.jsonl", rows[:3] + [{"question": "v", "answer": "2"}])
    task = get_task("file", path=train, val_path=val, verifier="math", val_fraction=0.5)
    assert (task.size("train"), task.size("val"), task.size("test")) == (7, 4, 0)
    assert task.duplicates == 3
    train_q = {task.example(i).question for i in range(7)}
    assert train_q == {f"q{i}" for i in range(3, 10)}
    assert task.example(3, "val").meta["origin"] == f"{val}:4"


def test_limit_uids_and_bad_settings(tmp_path: Path, fakes: list) -> None:
    rows = [{"question": f"q{i}", "answer": "1", "data_source": "gsm"} for i in range(20)]
    path = jsonl(tmp_path / "x.jsonl", rows)
    task = get_task("file", path=path, limit=5, val_fraction=0.0)
    assert task.size() == 5
    uids = {task.example(i).uid for i in range(5)}
    assert len(uids) == 5 and task.example(2) == task.example(2)
    with pytest.raises(IndexError):
        task.example(5)
    with pytest.raises(ValueError, match="unknown split"):
        task.example(0, "dev")
    for settings, message in [
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"on_error": "warn"}, "on_error"),
        ({"limit": 0}, "limit"),
        ({"data_source_map": "gsm8k"}, "data_source_map"),
        ({"path": str(tmp_path / "absent.parquet")}, "absent.parquet"),
    ]:
        with pytest.raises(ValueError, match=message):
            get_task("file", **{"path": path, **settings})


def test_named_wrappers_need_a_path() -> None:
    for name in ("math", "stem", "code", "ifeval", "file"):
        with pytest.raises(ValueError, match=f"task '{name}' needs path="):
            get_task(name)


def test_no_torch_import() -> None:
    code = "import sys, prorl.tasks.files, prorl.data; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_real_math_and_ifeval_verifiers(tmp_path: Path) -> None:
    """End to end with the registered verifiers (skipped until they exist)."""
    missing = {"math", "ifeval"} - set(list_verifiers())
    if missing:
        pytest.skip(f"verifiers not registered yet: {sorted(missing)}")
    rows = [
        {"problem": "What is 2+3?", "solution": "2+3 is $\\boxed{5}$.", "data_source": "MATH"},
        {
            "prompt": "Answer in all caps.",
            "instruction_id_list": ["change_case:english_capital"],
            "kwargs": [{}],
            "data_source": "google/IFEval",
        },
    ]
    task = get_task("file", path=jsonl(tmp_path / "real.jsonl", rows), val_fraction=0.0)
    math_ex, if_ex = task.example(0), task.example(1)
    assert task.score("It is \\boxed{5}.", math_ex).reward == 1.0
    assert task.score("It is \\boxed{6}.", math_ex).reward == 0.0
    assert task.score("HELLO THERE", if_ex).reward == 1.0
    assert task.score("hello there", if_ex).reward == 0.0


def test_reasoning_gym_rows_scored_by_their_dataset(tmp_path: Path) -> None:
    import reasoning_gym

    entry = reasoning_gym.create_dataset("leg_counting", seed=3, size=1)[0]
    row = {
        "question": entry["question"],
        "answer": entry["answer"],
        "data_source": "reasoning_gym",
        "extra_info": {"metadata": entry["metadata"]},  # holds source_dataset
    }
    task = get_task("file", path=jsonl(tmp_path / "rg.jsonl", [row]), val_fraction=0.0)
    ex = task.example(0)
    assert (ex.meta["verifier"], task.domain) == ("reasoning_gym", "logic")
    assert task.score(f"<answer>{entry['answer']}</answer>", ex).reward == 1.0
    assert task.score("<answer>-1</answer>", ex).reward == 0.0
    assert task.score("no tags", ex).reason == "format"


def test_answer_format_and_reference_per_verifier(tmp_path: Path, fakes: list) -> None:
    task = get_task("file", path=jsonl(tmp_path / "mixed.jsonl", MIXED), val_fraction=0.0)
    refs = [task.reference_response(task.example(i)) for i in range(len(MIXED))]
    # math, stem_mc, stem rows: the reference boxed; ifeval and code rows: no single reference.
    assert refs == [
        "\\boxed{4}",
        "\\boxed{B}",
        "\\boxed{R ln 2}",
        None,
        None,
        None,
        "\\boxed{done}",
    ]
    # A file mixing formats: a trivial answer is written in each of them.
    assert task.format_answer("x") == "\\boxed{x}\n```python\nx\n```"
    math_rows = [r for r in MIXED if r.get("answer") == 4]
    math = get_task("math", path=jsonl(tmp_path / "m.jsonl", math_rows), val_fraction=0.0)
    assert math.format_answer("") == "\\boxed{}"
    code_rows = [r for r in MIXED if "entry_point" in r or "input_output" in r]
    code = get_task("file", path=jsonl(tmp_path / "c.jsonl", code_rows), val_fraction=0.0)
    assert code.format_answer("pass") == "```python\npass\n```"
    if_rows = [r for r in MIXED if "instruction_id_list" in r]
    ifeval = get_task("file", path=jsonl(tmp_path / "i.jsonl", if_rows), val_fraction=0.0)
    assert ifeval.format_answer("text") == "text"  # no answer format
    assert ifeval.reference_response(ifeval.example(0)) is None


def test_reference_is_none_under_a_custom_reward_fn(tmp_path: Path) -> None:
    (tmp_path / "my_reward.py").write_text(REWARD_FILE)
    f = write_verl_parquet(tmp_path / "t.parquet", VERL_ROWS)
    spec = f"{tmp_path / 'my_reward.py'}:compute_score"
    task = get_task("file", path=str(f), reward_fn=spec, val_fraction=0.0)
    assert task.reference_response(task.example(0)) is None  # its format is the function's


def test_reasoning_gym_rows_answer_in_tags(tmp_path: Path) -> None:
    row = {"question": "How many legs?", "answer": "8", "data_source": "reasoning_gym"}
    task = get_task("file", path=jsonl(tmp_path / "rg.jsonl", [row]), val_fraction=0.0)
    assert task.format_answer("x") == "<answer>x</answer>"
    assert task.reference_response(task.example(0)) == "<answer>8</answer>"
