"""prorl reproduce end to end: the cpu-boundary study shrunk to the tiny model, a few steps
and small n.

Every part runs for real (child processes, the HF sampler): the screen, the base
evaluation, a 4-step run with checkpoints, their evaluations, the ablation, its evaluation and
the report.
Then a rerun skips every finished part, and a bad study fails before anything runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from eval_fixtures import write_synthetic
from prorl.cli import main
from prorl.config import ConfigError, load_config
from prorl.study.config import load_study, study_path

SMALL = {
    "n": 4,
    "problems": 2,
    "max_new_tokens": 8,
    "sampler": "hf",
    "dtype": "float32",
    "batch_size": 8,
}
# The real study (src/prorl/configs/studies/cpu-boundary.yaml) and its presets, shrunk: the
# tiny model, 4 steps, 2 problems x 4 samples. Everything else - tasks and their settings,
# the recipe, the ablation's overrides, the screen's 21 tasks - is the study's own.
TINY = [
    "model.name=tiny",
    "model.bf16=false",
    "steps=4",
    "rollout.sampler=hf",
    "rollout.max_new_tokens=8",
    "rollout.prompts_per_step=2",
    "rollout.n=4",
    "rollout.batch_size=8",
    "algo.micro_batch_size=8",
    "algo.truncated_is=false",
    "data.val_problems=2",
    "eval.every=2",
    "eval.n=2",
    "checkpoint.every=2",
]


def _study(tmp_path: Path) -> Path:
    real = yaml.safe_load(study_path("cpu-boundary").read_text())
    real.update(
        base_model="tiny",
        train_overrides=TINY,
        checkpoints=[2, 4],
        screen={**real["screen"], "sampling": {**SMALL, "split": "val", "problems": 1}},
        sampling={**SMALL, "split": "test"},
        work_dir=str(tmp_path / "work"),
        results_dir=str(tmp_path / "results"),
    )
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(real))
    return study


def test_tiny_study_end_to_end_then_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path)
    assert main(["reproduce", str(study)]) == 0
    res = tmp_path / "results"
    for part in ("screen", "base", "report", "ablation-report"):
        assert (res / part / "summary.json").is_file(), part
    assert (res / "train" / "metrics.jsonl").is_file() and (
        res / "ablation" / "metrics.jsonl"
    ).is_file()
    assert (res / "curves.png").stat().st_size > 0
    validation = json.loads((res / "train" / "validation" / "summary.json").read_text())
    assert validation["models"] == ["step_000000", "step_000002", "step_000004"]
    summary = json.loads((res / "report" / "summary.json").read_text())
    assert summary["models"] == ["base", "step_000002", "step_000004"]
    preset = load_config("cpu-boundary").data
    names = list(dict.fromkeys(t.name for t in (*preset.tasks, *preset.val_tasks)))
    assert [t["name"] for t in summary["tasks"]] == names
    counts = summary["counts"][names[-1]]["step_000004"]
    assert counts["n"] == [4, 4] and len(counts["c"]) == 2
    assert summary["compute_fit"]["steps"] == [0, 2, 4]
    ablation = json.loads((res / "ablation-report" / "summary.json").read_text())
    assert ablation["models"] == ["base", "no-kl-no-reset"]
    versus = json.loads((res / "recipe-vs-ablation" / "summary.json").read_text())
    assert versus["models"] == ["step_000004", "no-kl-no-reset"]
    assert versus["counts"][names[0]]["step_000004"] == summary["counts"][names[0]]["step_000004"]
    curves = json.loads((res / "curves.json").read_text())
    assert len(curves) == 2 and "ProRL recipe" in curves
    assert [p[0] for p in curves["ProRL recipe"]["eval/pass@1"]] == [0, 2, 4]
    # the ablation ran with its override, the main run without it
    ablation_cfg = yaml.safe_load((res / "ablation" / "config.yaml").read_text())
    main_cfg = yaml.safe_load((res / "train" / "config.yaml").read_text())
    assert ablation_cfg["algo"]["kl_coef"] == 0 and main_cfg["algo"]["kl_coef"] > 0
    # without the KL term, its KL to the starting policy is still measured for the curves
    # (the tiny model never scores here, so no update logs one: test_train checks the log)
    assert ablation_cfg["algo"]["track_kl"] is True
    # checkpoints the study evaluates were kept (milestones), not pruned by keep_last
    assert (tmp_path / "work" / "run" / "checkpoints" / "step_00000002" / "policy").is_dir()

    capsys.readouterr()
    assert main(["reproduce", str(study)]) == 0  # everything done: nothing reruns
    out = capsys.readouterr().out
    assert out.count("done already") == 7 and "prorl eval" not in out

    _lose_the_machine_during_the_checkpoints_part(tmp_path, study, summary, capsys)


def _lose_the_machine_during_the_checkpoints_part(
    tmp_path: Path, study: Path, summary: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The machine is lost during the checkpoints part, before any checkpoint's evaluation
    was published, and the ablation's evaluation is lost with it: the work directory - runs,
    checkpoints, samples - is gone, the committed results stay. A rerun skips the published
    parts, puts the published models back, trains the run again to step 2 (same seed: same
    metrics), evaluates it, resumes that run to step 4 (the stored config says 2 steps: the
    study must ask for 4), evaluates it, trains the ablation again to its last step for its
    evaluation, and rebuilds the reports with the same numbers. The published whole runs are
    never replaced by the retrained pieces."""
    res = tmp_path / "results"
    shutil.rmtree(tmp_path / "work")
    ledger = json.loads((res / "parts.json").read_text())
    assert sorted(ledger) == [
        "ablation",
        "ablation-eval",
        "base",
        "checkpoints",
        "report",
        "screen",
        "train",
    ]
    del ledger["checkpoints"], ledger["ablation-eval"], ledger["report"]
    (res / "parts.json").write_text(json.dumps(ledger))
    man = json.loads((res / "evals" / "eval.json").read_text())
    lost = ("step_000002", "step_000004", "no-kl-no-reset")
    man["models"] = [m for m in man["models"] if m["label"] not in lost]
    (res / "evals" / "eval.json").write_text(json.dumps(man))
    for label in lost:
        shutil.rmtree(res / "evals" / "results" / label)
    published = {
        (run, f): (res / run / f).read_bytes()
        for run in ("train", "ablation")
        for f in ("metrics.jsonl", "config.yaml")
    }
    ablation = json.loads((res / "ablation-report" / "summary.json").read_text())

    capsys.readouterr()
    assert main(["reproduce", str(study)]) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == 4  # screen, base, train, ablation
    assert "put back the published results of base\n" in out
    assert out.count("training the run to it again") == 3
    assert "train --resume" in out and "steps=4" in out
    assert "matches the published metrics to step 2" in out, out
    assert "[checkpoints] the retrained run matches the published metrics to step 4" in out
    assert "[ablation-eval] the retrained run matches the published metrics to step 4" in out
    assert out.count("prorl eval") == 3 and "step_000002=" in out and "step_000004=" in out
    assert "no-kl-no-reset=" in out and "ablation-run/checkpoints/step_00000004" in out
    assert {key: (res / key[0] / key[1]).read_bytes() for key in published} == published
    again = json.loads((res / "report" / "summary.json").read_text())
    assert again["models"] == summary["models"]
    assert again["counts"] == summary["counts"]  # restored and re-evaluated alike
    again = json.loads((res / "ablation-report" / "summary.json").read_text())
    assert again["counts"] == ablation["counts"]


def test_bad_study_fails_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path)
    text = study.read_text()
    study.write_text(text.replace("- 2\n- 4\n", "- 4\n- 2\n"))
    assert main(["reproduce", str(study)]) == 2
    assert "checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    study.write_text(text)
    assert main(["reproduce", str(study), "--parts", "screen,nope"]) == 2
    assert not (tmp_path / "work").exists()
    with pytest.raises(ConfigError, match="not found"):
        load_study("no-such-study")


def test_run_killed_before_its_first_checkpoint_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prorl train refuses to start over a run directory and cannot resume one without a
    checkpoint: the study sets such a run aside and starts it again, keeping its files. (The
    train command is not run here, so the run never reaches its length: the part fails and
    publishes nothing.)"""
    from prorl.study.run import PartFailed, StudyRunner

    study = load_study(str(_study(tmp_path)))
    runner = StudyRunner(study, log=lambda _: None)
    calls: list[list[str]] = []
    monkeypatch.setattr(runner, "_prorl", lambda part, args: calls.append(list(args)))
    run = runner.run_dir()
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {i}}}\n' for i in range(4)))
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(PartFailed, match="stopped at step 0 of 4; nothing was published"):
        runner.part_train()
    assert calls[0][:3] == ["train", "--preset", "cpu-boundary"] and "steps=4" in calls[0]
    (aside,) = run.parent.glob("run.no-checkpoint-*")
    assert (aside / "metrics.jsonl").read_text() == '{"step": 0}\n'
    # with a complete checkpoint the same part resumes instead
    calls.clear()
    ckpt = run / "checkpoints" / "step_00000050"
    ckpt.mkdir(parents=True)
    (ckpt / "COMPLETE").write_text("")
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {i}}}\n' for i in range(4)))
    (run / "metrics.jsonl").write_text('{"step": 3}\n')
    with pytest.raises(PartFailed, match="stopped at step 3 of 4"):
        runner.part_train()
    assert calls[0] == ["train", "--resume", str(run), "steps=4"]
    assert not (tmp_path / "results" / "train").exists()


def test_status_says_what_is_done_published_and_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--status reads the ledger, the work directory, the published models and the runs'
    checkpoints, and runs nothing."""
    from prorl.checkpoint import MARKER, step_name
    from prorl.study.run import LEDGER, StudyRunner

    study_file = _study(tmp_path)
    runner = StudyRunner(load_study(str(study_file)), log=lambda _: None)
    results, work = tmp_path / "results", tmp_path / "work"
    results.mkdir()
    (results / LEDGER).write_text(json.dumps({"base": "2026-01-02T03:04:05Z"}))
    (work / "parts").mkdir(parents=True)
    (work / "parts" / "screen.done").write_text("2026-01-01T00:00:00Z\n")
    run = runner.run_dir()
    for step, complete in ((2, True), (4, False)):
        d = run / "checkpoints" / step_name(step)
        d.mkdir(parents=True)
        if complete:
            (d / MARKER).write_text("")
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {i}}}\n' for i in range(4)))
    # step 2's evaluation was cut short: one task of two finished (2 problems), one started
    rewards = {("step_000002", "rg/a"): np.zeros((2, 4)), ("step_000002", "rg/b"): np.zeros((1, 4))}
    write_synthetic(work / "eval", rewards, {"rg/a": "x", "rg/b": "x"})

    assert main(["reproduce", str(study_file), "--status"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "done 2026-01-02T03:04:05Z (published)" in lines["base"]
    assert "(this machine only)" in lines["screen"]
    assert lines["train"].split()[1:] == ["to", "do"]
    assert "evaluated models published: none" in out
    assert "evaluation in progress: step_000002: 1 of 2 tasks, 3 of 4 problems" in out
    full = runner._full_steps(False)
    # step 4's checkpoint is incomplete; the metrics got to step 3
    assert f"run:          step 3 of {full} logged, checkpoints at steps 2\n" in out
    assert "ablation run: not started here" in out
    parts = "train,checkpoints,ablation,ablation-eval,report"
    assert f"next: prorl reproduce cpu-boundary --parts {parts}" in out
    # nothing was run or written by the status itself
    assert sorted(p.name for p in work.iterdir()) == ["eval", "parts", "run"]
