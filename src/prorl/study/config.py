"""A study: the base evaluation, a prolonged run, checkpoint evaluations, an ablation and
the report, defined in one YAML file (``src/prorl/configs/studies/<name>.yaml``).

Frozen dataclasses checked on load, like the training configs: a bad value fails before
anything runs, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prorl.config import PRESETS_DIR, ConfigError, from_dict, list_presets

STUDIES_DIR = PRESETS_DIR / "studies"


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass(frozen=True)
class Sampling:
    """How an evaluation samples: the ``prorl eval`` options of every part."""

    n: int = 128
    problems: int = 64
    split: str = "test"
    max_new_tokens: int = 64
    temperature: float = 0.6
    top_p: float = 0.95
    sampler: str = "vllm"
    dtype: str = "bfloat16"
    batch_size: int = 256
    chunk: int = 4

    def __post_init__(self) -> None:
        _check(self.n >= 1 and self.problems >= 1, "n/problems", "must be >= 1")
        _check(self.sampler in ("hf", "vllm"), "sampler", "choose hf or vllm")

    def eval_args(self) -> list[str]:
        return [
            *("--n", str(self.n), "--problems", str(self.problems), "--split", self.split),
            *("--max-new-tokens", str(self.max_new_tokens)),
            *("--temperature", str(self.temperature), "--top-p", str(self.top_p)),
            *("--sampler", self.sampler, "--dtype", self.dtype),
            *("--batch-size", str(self.batch_size), "--chunk", str(self.chunk)),
        ]


@dataclass(frozen=True)
class Screen:
    """The candidate-task screen with the base model (skipped when ``task_config`` is empty)."""

    task_config: str = ""
    sampling: Sampling = field(default_factory=lambda: Sampling(n=64, problems=16, split="val"))


@dataclass(frozen=True)
class Study:
    name: str
    train_preset: str  # the prolonged run's preset; its data.tasks + data.val_tasks are evaluated
    base_model: str = "smollm2-135m"
    train_overrides: tuple[str, ...] = ()
    checkpoints: tuple[int, ...] = ()  # steps evaluated besides the base (the last is final)
    ablation_label: str = "ablation"
    ablation_overrides: tuple[str, ...] = ()  # empty: no ablation
    screen: Screen = field(default_factory=Screen)
    sampling: Sampling = field(default_factory=Sampling)
    work_dir: str = "~/prorl-runs/{name}"  # runs, checkpoints, samples: never committed
    results_dir: str = "results/{name}"  # small files, committed as each part finishes

    def __post_init__(self) -> None:
        _check(bool(self.name), "name", "give the study a name")
        steps = list(self.checkpoints)
        _check(steps == sorted(set(steps)), "checkpoints", "steps must increase")
        _check(all(s > 0 for s in steps), "checkpoints", "steps must be > 0")

    @property
    def work(self) -> Path:
        return Path(self.work_dir.format(name=self.name)).expanduser()

    @property
    def results(self) -> Path:
        return Path(self.results_dir.format(name=self.name))


def study_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDIES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.yaml")))
        raise ConfigError(f"study: {name_or_path!r} not found; studies: {known} (or a YAML path)")
    return path


def load_study(name_or_path: str, overrides: dict[str, Any] | None = None) -> Study:
    """Load a study by name or path; ``overrides`` replace top-level keys (tests, --work)."""
    path = study_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"study: {path} is not valid YAML: {e}") from e
    data = {**data, **(overrides or {})}
    study: Study = from_dict(Study, data)
    preset = Path(study.train_preset)
    _check(
        study.train_preset in list_presets() or preset.is_file(),
        "train_preset",
        f"{study.train_preset!r} is neither a preset ({', '.join(list_presets())}) nor a file",
    )
    return study
