"""prorl reproduce end to end in a tiny configuration: the tiny model, a few steps, small n.

Every part runs for real (child processes, the HF sampler): the screen, the base
evaluation, a 4-step run with checkpoints, their evaluations, the ablation and the report.
Then a rerun skips every finished part, and a bad study fails before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from prorl.cli import main
from prorl.config import ConfigError
from prorl.study.config import load_study

TRAIN = """
seed: 0
steps: 4
tensorboard: false
model: {name: tiny, bf16: false}
data:
  tasks:
    - {name: rg/chain_sum, settings: {answer: last_number, min_terms: 2, max_terms: 2, max_digits: 1}}
    - {name: rg/products, settings: {answer: last_number, min_terms: 2, max_terms: 2, max_digits: 1}}
  val_tasks:
    - {name: rg/chain_sum, settings: {answer: last_number, min_terms: 2, max_terms: 2, max_digits: 1}}
    - {name: rg/products, settings: {answer: last_number, min_terms: 2, max_terms: 2, max_digits: 1}}
    - {name: rg/lcm, settings: {answer: last_number, max_value: 12}}
  val_problems: 2
rollout: {prompts_per_step: 2, n: 4, max_new_tokens: 8, max_rounds: 1}
algo: {micro_batch_size: 8}
optim: {lr: 1.0e-4}
eval: {every: 2, n: 2}
checkpoint: {every: 2}
verify: {workers: 1}
"""

SAMPLING = "{n: 4, problems: 2, split: test, max_new_tokens: 8, sampler: hf, dtype: float32, batch_size: 8}"


def _study(tmp_path: Path) -> Path:
    (tmp_path / "train.yaml").write_text(TRAIN)
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: tiny\ntrain_preset: {tmp_path / 'train.yaml'}\nbase_model: tiny\n"
        "checkpoints: [2, 4]\n"
        "ablation_label: no-kl\nablation_overrides: ['algo.kl_coef=0']\n"
        f"screen: {{task_config: {tmp_path / 'train.yaml'}, sampling: {SAMPLING}}}\n"
        f"sampling: {SAMPLING}\n"
        f"work_dir: {tmp_path / 'work'}\nresults_dir: {tmp_path / 'results'}\n"
    )
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
    summary = json.loads((res / "report" / "summary.json").read_text())
    assert summary["models"] == ["base", "step_000002", "step_000004"]
    assert [t["name"] for t in summary["tasks"]] == ["rg/chain_sum", "rg/products", "rg/lcm"]
    counts = summary["counts"]["rg/lcm"]["step_000004"]
    assert counts["n"] == [4, 4] and len(counts["c"]) == 2
    assert summary["compute_fit"]["steps"] == [0, 2, 4]
    ablation = json.loads((res / "ablation-report" / "summary.json").read_text())
    assert ablation["models"] == ["base", "no-kl"]
    curves = json.loads((res / "curves.json").read_text())
    assert set(curves) == {"ProRL recipe", "no-kl: algo.kl_coef=0"}
    assert [p[0] for p in curves["ProRL recipe"]["eval/pass@1"]] == [0, 2, 4]
    # the ablation ran with its override, the main run without it
    ablation_cfg = yaml.safe_load((res / "ablation" / "config.yaml").read_text())
    main_cfg = yaml.safe_load((res / "train" / "config.yaml").read_text())
    assert ablation_cfg["algo"]["kl_coef"] == 0 and main_cfg["algo"]["kl_coef"] > 0
    # checkpoints the study evaluates were kept (milestones), not pruned by keep_last
    assert (tmp_path / "work" / "run" / "checkpoints" / "step_00000002" / "policy").is_dir()

    capsys.readouterr()
    assert main(["reproduce", str(study)]) == 0  # everything done: nothing reruns
    out = capsys.readouterr().out
    assert out.count("done already") == 6 and "prorl eval" not in out


def test_bad_study_fails_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path)
    text = study.read_text()
    study.write_text(text.replace("checkpoints: [2, 4]", "checkpoints: [4, 2]"))
    assert main(["reproduce", str(study)]) == 2
    assert "checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    study.write_text(text)
    assert main(["reproduce", str(study), "--parts", "screen,nope"]) == 2
    assert not (tmp_path / "work").exists()
    with pytest.raises(ConfigError, match="not found"):
        load_study("no-such-study")
