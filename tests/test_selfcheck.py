"""Task self-checks and the null floor: leaky tasks are caught, sound ones pass, and train,
eval and `prorl tasks --check` act on the verdict."""

import pytest

from prorl import cli
from prorl.config import ConfigError, load_config
from prorl.runtime import self_checked, without_tasks
from prorl.tasks.selfcheck import (
    JUNK,
    SelfCheckError,
    check_task,
    floor_rewards,
    preflight,
    trivial_responses,
)
from prorl.types import Example, Score


class FakeTask:
    """Answers in <a></a>; ``leak`` names the trivial case it wrongly rewards."""

    domain = "test"

    def __init__(self, leak: str = "", name: str = "fake") -> None:
        self.name = name
        self.leak = leak

    def size(self, split: str = "train") -> int | None:
        return None if split == "train" else 4

    def example(self, index: int, split: str = "train") -> Example:
        q = f"What is {index} + 1? Answer as <a>your answer</a>."
        return Example(
            f"fake:{split}:{index}", self.name, ({"role": "user", "content": q},), str(index + 1)
        )

    def format_answer(self, content: str) -> str:
        return f"<a>{content}</a>"

    def reference_response(self, example: Example) -> str | None:
        return self.format_answer(example.answer)

    def score(self, response: str, example: Example) -> Score:
        if self.leak == "empty" and not response:
            return Score(1.0, "ok")
        if self.leak == "echo" and response == example.question:
            return Score(1.0, "ok")
        if self.leak == "junk" and JUNK in response:
            return Score(0.5, "wrong")  # partial credit for junk: also a failure
        if self.leak == "reference":
            return Score(0.0, "wrong")
        ok = response == self.format_answer(example.answer)
        return Score(float(ok), "ok" if ok else "wrong", formatted=response.startswith("<a>"))


def test_trivial_responses_use_the_task_format():
    task = FakeTask()
    ex = task.example(3)
    assert trivial_responses(task, ex) == {
        "empty": "",
        "format": "<a></a>",
        "junk": f"<a>{JUNK}</a>",
        "echo": ex.question,
    }


def test_sound_task_passes():
    result = check_task(FakeTask(), problems=5)
    assert result.ok and result.problems == 5 and result.references == 5
    assert result.verdict().startswith("ok")


@pytest.mark.parametrize("leak", ["empty", "echo", "junk", "reference"])
def test_each_leak_is_caught_and_named(leak):
    result = check_task(FakeTask(leak), problems=3)
    assert not result.ok
    assert {f.case for f in result.failures} == {leak}
    assert len(result.failures) == 3  # every problem
    assert leak in result.verdict() and result.verdict().startswith("FAIL")


def test_floor_rewards_per_trivial_policy():
    task = FakeTask("echo")
    assert floor_rewards(task, task.example(0)) == {
        "empty": 0.0,
        "format": 0.0,
        "junk": 0.0,
        "echo": 1.0,
    }


def test_preflight_strict_raises_with_task_and_case():
    with pytest.raises(SelfCheckError, match=r"fake-echo: the echo response scores 1"):
        preflight({"ok": FakeTask(name="ok"), "fake-echo": FakeTask("echo", "fake-echo")}, "strict")


def test_preflight_exclude_warns_and_returns_failing():
    said = []
    tasks = {"ok": FakeTask(name="ok"), "bad": FakeTask("empty", "bad")}
    assert preflight(tasks, "exclude", warn=said.append) == ["bad"]
    assert len(said) == 1 and "leaving out bad" in said[0]
    assert preflight(tasks, "skip") == []


def test_without_tasks_drops_them_everywhere():
    cfg = load_config(None, ["data.tasks=toy-even,rg/leg_counting", "data.val_tasks=toy-even"])
    out = without_tasks(cfg, {"toy-even"})
    assert [s.name for s in out.data.tasks] == ["rg/leg_counting"]
    assert out.data.val_tasks == ()
    with pytest.raises(ConfigError, match="every training task failed"):
        without_tasks(cfg, {"toy-even", "rg/leg_counting"})


def test_train_preflight_refuses_a_leaky_task():
    tasks = {"toy-even": FakeTask("echo", "toy-even")}
    cfg = load_config(None, ["data.tasks=toy-even"])
    with pytest.raises(ConfigError, match=r"data.tasks: task self-check failed: toy-even"):
        self_checked(cfg, tasks)
    kept = load_config(None, ["data.tasks=toy-even", "data.self_check=skip"])
    assert self_checked(kept, tasks) is kept


def test_cli_check_exit_codes(monkeypatch, capsys):
    import prorl.tasks as tasks_pkg

    monkeypatch.setattr(tasks_pkg, "get_task", lambda name, **kw: FakeTask(name[5:], name))
    assert cli.main(["tasks", "--check", "fake-echo", "fake-", "--problems", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  fake-echo" in out and "ok    fake-:" in out
    assert "1 of 2 tasks passed" in out
    assert cli.main(["tasks", "--check", "fake-", "--problems", "2"]) == 0
    assert cli.main(["tasks", "--check", "fake-", "--problems", "0"]) == 2


def test_check_reports_the_best_constant_answer() -> None:
    # FakeTask's answers are 1, 2, 3, ...: every answer once, the smallest wins the tie
    result = check_task(FakeTask(), problems=4)
    assert result.constant == ("1", 0.25)
    assert "one answer (1) is right on 25 %" in result.verdict()


def test_check_finds_letter_countings_dominant_answer() -> None:
    from prorl.tasks import get_task

    # the cpu-boundary study's settings: texts of 3-6 words, so most letters appear once
    task = get_task("rg/letter_counting", answer="last_number", min_words=3, max_words=6)
    result = check_task(task, problems=64, split="test")
    assert result.ok and result.constant == ("1", 37 / 64)  # the study's reward trap
