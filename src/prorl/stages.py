"""Training stages: a run as a sequence of stages, each overriding part of the base config.

ProRL v1 trained as eight consecutive runs joined by resets, some changing the data mix, the
response cap or the samples per prompt. Here that is one config::

    stages:
      - {name: 8k, steps: 1000, rollout: {max_new_tokens: 8192, n: 16}}
      - {name: 8k-n32, steps: 600, rollout: {n: 32}, shaping: {overlong: penalty}}
      - {name: 16k, steps: 200, rollout: {max_new_tokens: 16384, n: 16}}

Stage ``i`` runs the steps ``[start_i, end_i)`` (counted as completed steps, like
``state.step``) with the base config plus its overrides. Everything here is a pure function
of the config and the step count, so a resumed run finds its stage from its step alone. The
training loop (``prorl.train``) resets the reference at each stage start.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from prorl.config import Config, ConfigError, TaskSpec, stage_ends, stage_section


@dataclass(frozen=True)
class StageSpan:
    index: int
    name: str
    start: int  # first step (completed-step count) of the stage
    end: int  # the step count at which it ends


def stage_spans(cfg: Config) -> list[StageSpan]:
    """The stages in order; a config without stages is one stage over the whole run."""
    if not cfg.stages:
        return [StageSpan(0, "", 0, cfg.steps)]
    ends = stage_ends(cfg)
    starts = [0, *ends[:-1]]
    return [
        StageSpan(i, st.name or f"stage{i}", s, e)
        for i, (st, s, e) in enumerate(zip(cfg.stages, starts, ends, strict=True))
    ]


def stage_at(cfg: Config, step: int) -> StageSpan:
    """The stage that runs the step after ``step`` completed steps (the last one past the end)."""
    spans = stage_spans(cfg)
    return next((s for s in spans if s.start <= step < s.end), spans[-1])


def config_for_step(cfg: Config, step: int) -> tuple[int, Config]:
    """(stage index, the config of that stage) for the step after ``step`` completed steps.

    The stage's config is ``cfg`` with the stage's overrides applied, section by section,
    through the config's own parsing and checks; ``stages`` stays in it."""
    span = stage_at(cfg, step)
    if not cfg.stages:
        return 0, cfg
    sections = {
        name: stage_section(cfg, name, values, f"stages[{span.index}].")
        for name, values in cfg.stages[span.index].overrides().items()
    }
    return span.index, dataclasses.replace(cfg, **sections)


def starts_stage(cfg: Config, step: int) -> StageSpan | None:
    """The stage that begins after ``step`` completed steps, when one other than the first
    does (a stage boundary: reset there)."""
    return next((s for s in stage_spans(cfg)[1:] if s.start == step), None)


def reset_optimizer_at(cfg: Config, index: int) -> bool:
    """Whether the reset that starts stage ``index`` re-initialises AdamW."""
    value = cfg.stages[index].reset_optimizer if cfg.stages else None
    return cfg.reset.reset_optimizer if value is None else value


def all_tasks(cfg: Config) -> tuple[TaskSpec, ...]:
    """Every training task of every stage, each once, in order of first appearance; a task
    must have the same settings wherever it appears (its data cursor is shared)."""
    seen: dict[str, TaskSpec] = {}
    for span in stage_spans(cfg):
        for spec in config_for_step(cfg, span.start)[1].data.tasks:
            known = seen.setdefault(spec.name, spec)
            if known.settings != spec.settings:
                raise ConfigError(
                    f"stages[{span.index}].data.tasks: {spec.name!r} has other settings than "
                    "in an earlier stage; a task keeps one set of settings for the whole run"
                )
    return tuple(seen.values())


def stage_weights(cfg: Config) -> dict[str, float]:
    """Task name -> weight in ``cfg``'s mix (a stage's config): what the mixture draws."""
    return {t.name: t.weight for t in cfg.data.tasks}


def describe(cfg: Config, index: int) -> dict[str, Any]:
    """The settings stage ``index`` overrides, as dotted keys with their parsed values
    (tasks as ``name:weight``), for events and the display."""
    if not cfg.stages:
        return {}
    staged = config_for_step(cfg, stage_spans(cfg)[index].start)[1]
    out: dict[str, Any] = {}
    for section, values in cfg.stages[index].overrides().items():
        for key in values:
            value = getattr(getattr(staged, section), key)
            if key == "tasks":
                value = [f"{t.name}:{t.weight:g}" for t in value]
            out[f"{section}.{key}"] = value
    return out


def label(cfg: Config, index: int) -> str:
    """``name i/N`` for the progress display."""
    return f"{stage_spans(cfg)[index].name} {index + 1}/{len(cfg.stages)}"


# --- the schedule the training loop asks ---------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A stage as the training loop uses it: where it runs, the config in force during it,
    and what starting it does (a new task mix; a reset that may re-initialise AdamW)."""

    span: StageSpan
    cfg: Config  # the run's config with this stage's overrides
    weights: dict[str, float]  # the task mix it draws from
    reset_optimizer: bool  # whether the reset that starts it re-initialises AdamW
    label: str  # ``name i/N`` for the display; "" in a run without stages

    @property
    def index(self) -> int:
        return self.span.index

    @property
    def start(self) -> int:
        return self.span.start


class Schedule:
    """The run's stages over its steps (a run without stages is one stage, its config).

    ``stage(step)``: the stage that runs the step after ``step`` completed steps;
    ``begins(step)``: that stage when a stage other than the first starts there (the loop
    resets then). Both are pure functions of the run's config and the step count, so a
    resumed run finds its stage from its step alone."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg  # the run's config, with its stages
        self.spans = stage_spans(cfg)
        self._stages: dict[int, Stage] = {}

    def stage(self, step: int) -> Stage:
        index = stage_at(self.cfg, step).index
        if index not in self._stages:
            _, config = config_for_step(self.cfg, self.spans[index].start)
            self._stages[index] = Stage(
                self.spans[index],
                config,
                stage_weights(config),
                reset_optimizer_at(self.cfg, index),
                label(self.cfg, index) if self.cfg.stages else "",
            )
        return self._stages[index]

    def begins(self, step: int) -> Stage | None:
        span = starts_stage(self.cfg, step)
        return None if span is None else self.stage(step)

    @property
    def staged(self) -> bool:
        """Whether the run has stages (else the one stage is the config itself)."""
        return bool(self.cfg.stages)
