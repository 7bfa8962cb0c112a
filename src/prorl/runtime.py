"""Build a training run from a Config: model, reference, optimizer, sampler, verifier pool,
task mixture, validation, sinks. Everything here is wiring; the maths lives in ``train``."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from prorl.checkpoint import check_compatible, resume_point, truncate_jsonl
from prorl.config import MASTER_DTYPE, Config, ConfigError, TaskSpec, save_config, to_dict
from prorl.display import Display
from prorl.metrics import MetricsWriter
from prorl.mixture import MixtureEntry, TaskMixture
from prorl.models import encode_prompts, load_policy
from prorl.policy import require_compiler
from prorl.sampling.factory import make_sampler
from prorl.scale import Scale, check_launch
from prorl.stages import all_tasks
from prorl.state import TrainState, frozen_copy, make_optimizer, restore_state
from prorl.tasks import Task, build_tasks
from prorl.train import SAMPLES, seed_everything, train_loop
from prorl.types import Example, Sample, Score

log = logging.getLogger("prorl")


def self_checked(cfg: Config, tasks: dict[str, Task]) -> Config:
    """Run the self-check (``data.self_check``) of the run's built training and validation
    ``tasks``; return ``cfg`` itself, or without the failing tasks under ``exclude``. A
    failure under ``strict`` is a ConfigError naming the task and the failing case."""
    from prorl.tasks.selfcheck import SelfCheckError, preflight

    try:
        failed = preflight(tasks, cfg.data.self_check, warn=lambda m: print(m, file=sys.stderr))
    except SelfCheckError as e:
        raise ConfigError(f"data.tasks: {e}") from None
    return without_tasks(cfg, set(failed)) if failed else cfg


def without_tasks(cfg: Config, names: set[str]) -> Config:
    """``cfg`` with the tasks ``names`` removed from training, validation and every stage."""

    def keep(specs: Sequence[TaskSpec]) -> tuple[TaskSpec, ...]:
        return tuple(s for s in specs if s.name not in names)

    def stage_keep(tasks: list[Any]) -> list[Any]:
        return [t for t in tasks if (t if isinstance(t, str) else t.get("name")) not in names]

    left = keep(cfg.data.tasks)
    if not left:
        raise ConfigError(f"data.tasks: every training task failed its self-check ({names})")
    stages = tuple(
        dataclasses.replace(st, data={**st.data, "tasks": stage_keep(st.data["tasks"])})
        if "tasks" in st.data
        else st
        for st in cfg.stages
    )
    data = dataclasses.replace(cfg.data, tasks=left, val_tasks=keep(cfg.data.val_tasks))
    return dataclasses.replace(cfg, data=data, stages=stages)


def pool_target(spec: TaskSpec, task: Task) -> Any:
    """What the verifier workers rebuild to score this task's items."""
    from prorl.scoring import ScoreTarget
    from prorl.tasks.files import FileTask

    if isinstance(task, FileTask):  # scores from example.meta alone: no file re-read per worker
        return ScoreTarget.function("prorl.tasks.files:score_row")
    return ScoreTarget.task(spec.name, **spec.settings)


def load_trainer_policy(cfg: Config) -> tuple[Any, Any]:
    """The policy the trainer updates, with its tokenizer: float32 master weights (so AdamW
    and its state are float32) whatever ``model.dtype`` says; the passes compute in bf16
    under autocast when ``model.bf16`` is on. A bf16 checkpoint is upcast on load."""
    return load_policy(cfg.model.name, MASTER_DTYPE)


def reference_copy(cfg: Config, policy: Any) -> Any:
    """The frozen KL reference: a copy of ``policy`` stored in ``model.dtype`` (bfloat16
    halves its memory; it never gets a gradient, so nothing rounds away)."""
    ref = frozen_copy(policy)
    return ref.to(load_dtype(cfg.model.dtype))


def load_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)  # type: ignore[no-any-return]


class RunScorer:
    """Scores groups of samples through the verifier pool, one pool target per task."""

    def __init__(self, pool: Any, targets: dict[str, Any]) -> None:
        self.pool = pool
        self.targets = targets

    def __call__(self, examples: list[Example], samples: list[list[Sample]]) -> list[list[Score]]:
        items = [
            (self.targets[ex.task], s.text, ex)
            for ex, group in zip(examples, samples, strict=True)
            for s in group
        ]
        flat = self.pool.score_batch(items)
        out, i = [], 0
        for group in samples:
            out.append(flat[i : i + len(group)])
            i += len(group)
        return out

    def for_eval(self, task: Task, example: Example, texts: Sequence[str]) -> list[Score]:
        target = self.targets[task.name]
        return list(self.pool.score_batch([(target, t, example) for t in texts]))


def make_validate(
    cfg: Config,
    run_dir: Path,
    scorer: Any,
    tasks: dict[str, Task],
    scale: Scale | None = None,
    progress: Any = None,
) -> Any:
    """Periodic validation through the same code as ``prorl eval`` (stored in RUN_DIR/eval).
    ``progress`` (a callable taking a line) hears how far each task got.

    ``scale`` (a learner process group's ``Scale``): ranks > 0 write into a scratch
    directory, so a validation first copies there what rank 0 already stored for the step (a
    resumed first validation that a signal had stopped). Every rank then skips the same
    problems, makes the same sampler calls (collectives) and gets the same metrics (reset and
    alarm decisions)."""
    from prorl.evaluate import store
    from prorl.evaluate.runner import EvalSettings, EvaluationStopped, evaluate_checkpoint

    if cfg.data.val_problems == 0:  # no validation (EvalSettings refuses 0 problems)
        return lambda state: {}
    settings = EvalSettings(
        n=cfg.eval.n,
        temperature=cfg.eval.temperature,
        top_p=cfg.eval.top_p,
        max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
        split="val",
        problems=cfg.data.val_problems,
        seed=cfg.seed,
        # a decode step costs about the same for 4 rows as for 32 (weight reads dominate on
        # CPU), so each call fills the sampler's batch; results are written per call
        chunk=max(1, cfg.rollout.batch_size // cfg.eval.n),
    )

    def validate(state: TrainState) -> dict[str, float]:
        label = f"step_{state.step:06d}"
        if scale is not None:
            main_eval = Path(cfg.run_dir) / "eval"  # read on rank 0 only
            manifest, stored = scale.on_main(
                lambda: (store.read_manifest(main_eval), store.read_model_files(main_eval, label))
            )
            if not scale.is_main and manifest is not None:
                store.write_manifest(run_dir / "eval", manifest)
                store.write_model_files(run_dir / "eval", label, stored)
        try:  # a SIGINT/SIGTERM stops validation between chunks; the stored ones stay
            metrics = evaluate_checkpoint(
                state.sampler,
                state.tokenizer,
                encode_prompts,
                tasks,
                run_dir / "eval",
                label,
                settings,
                scorer.for_eval,
                spec=f"run {cfg.run_dir} at step {state.step}",
                log=progress,
                should_stop=lambda: state.stop_requested,
            )
        except EvaluationStopped:
            return {}
        return {**metrics, **overall_metrics(metrics)}

    return validate


def overall_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Macro averages over the validation tasks of the per-task ``eval/<task>/...`` metrics
    in ``metrics``:
    ``eval/pass@1`` (success rate), ``eval/mean_reward``, ``eval/floor`` (what the best
    trivial response scores on the same problems) and ``eval/gain`` (pass@1 - floor)."""
    out: dict[str, float] = {}
    for name in ("pass@1", "mean_reward", "floor"):
        values = [v for k, v in metrics.items() if k.endswith("/" + name)]
        if values:
            out[f"eval/{name}"] = sum(values) / len(values)
    if "eval/pass@1" in out and "eval/floor" in out:
        out["eval/gain"] = out["eval/pass@1"] - out["eval/floor"]
    return out


def prepare_run_dir(run_dir: Path) -> Path | None:
    """Return the checkpoint to resume from, or None for a fresh run in a new directory.

    A directory holding a run but no complete checkpoint is refused (never a silent fresh
    start over it): nothing is touched when this raises."""
    if (run_dir / "checkpoints").is_dir():
        found = resume_point(run_dir)
        if found is None:
            raise ConfigError(
                f"run_dir: {run_dir} holds no complete checkpoint to resume from; "
                "pick a new --run-dir"
            )
        return found
    if (run_dir / "metrics.jsonl").exists() or (run_dir / "config.yaml").exists():
        raise ConfigError(
            f"run_dir: {run_dir} already holds a run; pick a new --run-dir "
            "(or --resume it once checkpoints exist)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def check_resume(cfg: Config, found: Path) -> list[str]:
    """Refuse a checkpoint made with an incompatible config; return the changed keys."""
    saved = yaml.safe_load((found / "config.yaml").read_text())
    return check_compatible(saved, to_dict(cfg), int(found.name.split("_")[1]))


def rewind_run_dir(run_dir: Path, step: int) -> None:
    """Forget what a killed run wrote after checkpoint ``step``: those steps run again and
    would otherwise appear twice in the logs (or stale in RUN_DIR/eval)."""
    # A step-0 checkpoint exists only when a signal stopped the first validation: step 0
    # (its validation row and events) runs again, so its rows go too.
    for name in ("metrics.jsonl", "events.jsonl", SAMPLES):
        truncate_jsonl(run_dir / name, step if step > 0 else -1)
    results = run_dir / "eval" / "results"
    for label in results.glob("step_*") if results.is_dir() else []:
        if label.name[5:].isdigit() and int(label.name[5:]) > step:
            shutil.rmtree(label)


@dataclasses.dataclass
class RunTasks:
    """The run's tasks, built once: training (every stage's; the loop sets each stage's
    weights) and validation, by name, with the specs they were built from."""

    train_specs: Sequence[TaskSpec]
    train: dict[str, Task]
    val_specs: Sequence[TaskSpec]
    val: dict[str, Task]

    def targets(self) -> dict[str, Any]:
        """What the verifier workers rebuild to score each task's items."""
        targets = {
            s.name: pool_target(s, t)
            for s, t in zip(self.train_specs, self.train.values(), strict=True)
        }
        targets.update(
            {
                s.name: pool_target(s, t)
                for s, t in zip(self.val_specs, self.val.values(), strict=True)
            }
        )
        return targets


def checked_tasks(cfg: Config) -> tuple[Config, RunTasks]:
    """Every task of the run, built before the model loads and self-checked: a task that a
    trivial answer can pass stops the run (or is left out of the returned config), and the
    tasks built for the check are the ones the run uses."""
    built = build_tasks(all_tasks(cfg))
    built_val = build_tasks(cfg.data.val_tasks) if cfg.data.val_tasks else built
    cfg = self_checked(cfg, {**built, **built_val})
    train_specs = all_tasks(cfg)
    val_specs = cfg.data.val_tasks or train_specs
    return cfg, RunTasks(
        train_specs,
        {s.name: built[s.name] for s in train_specs},
        val_specs,
        {s.name: built_val.get(s.name) or built[s.name] for s in val_specs},
    )


@dataclasses.dataclass
class RunDirectory:
    """The run directory as every rank sees it (``run_directory``)."""

    path: Path  # cfg.run_dir: rank 0's
    resume: Path | None  # the checkpoint to resume from; None: a fresh run
    changed: list[str]  # the config keys that differ from the checkpoint's
    scale: Scale
    begun: bool = False
    own: Path = dataclasses.field(init=False, repr=False)  # where this rank writes, once begun

    def begin(self) -> None:
        """From here on the directory holds a real (partial) run: kept whatever happens.
        Ranks > 0 get their scratch directory to write into (rank 0: ``path``)."""
        self.begun = True
        self.own = self.scale.run_dir(self.path)

    def rewind(self, cfg: Config, step: int) -> None:
        """A run resumed at ``step``: rank 0 forgets what the killed run wrote after that
        checkpoint and stores the config it continues with (e.g. a raised ``steps``)."""
        if self.scale.is_main:
            rewind_run_dir(self.path, step)
            save_config(cfg, self.path / "config.yaml")


@contextlib.contextmanager
def run_directory(cfg: Config, scale: Scale) -> Iterator[RunDirectory]:
    """Rank 0 prepares ``cfg.run_dir`` (a fresh run's, with its config.yaml, or a resumed
    one's newest complete checkpoint); the other ranks follow its decision, or its refusal.
    A fresh run that fails before ``begin()`` leaves nothing behind: the directory made
    here is removed, or the config.yaml written into an existing one. A resumed run's
    directory is never cleaned up."""
    path = Path(cfg.run_dir)
    existed = path.exists()
    found = scale.on_main(lambda: prepare_run_dir(path))
    changed = scale.on_main(lambda: check_resume(cfg, found)) if found else []
    run = RunDirectory(path, found, changed, scale)
    created = found is None and scale.is_main
    try:
        if created:
            save_config(cfg, path / "config.yaml")
        yield run
    except BaseException:
        if created and not run.begun:
            if existed:
                (path / "config.yaml").unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
        raise


def build_state(
    cfg: Config,
    scale: Scale,
    run: RunDirectory,
    policy: Any,
    tokenizer: Any,
    tasks: RunTasks,
    stack: contextlib.ExitStack,
) -> TrainState:
    """This rank's training state, resumed from ``run.resume`` if set: the policy on the
    learner device with its reference, sampler, optimizer and learner; the task mixture; the
    scorer over the verifier pool, which is entered on ``stack`` (it ends with the run)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    policy.to(scale.device)  # the reference is copied from it, so it lands there too
    if cfg.model.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
        policy.config.use_cache = False
    ref = reference_copy(cfg, policy) if cfg.algo.keeps_reference else None
    # may refuse the model: nothing kept yet (Ray: starts the rollout actors)
    sampler = scale.sampler(lambda: make_sampler(cfg, policy, tokenizer), policy)
    scale.shard(policy, ref)  # FSDP2: in place, after the actors got whole weights
    optimizer, scheduler = make_optimizer(cfg, policy)
    targets = tasks.targets()
    entries = [MixtureEntry(s.name, s.weight, tasks.train[s.name]) for s in tasks.train_specs]
    mixture = TaskMixture(entries, cfg.seed)
    run.begin()
    pool = stack.enter_context(scale.verifier_pool())
    state = TrainState(
        cfg,
        policy,
        tokenizer,
        ref,
        optimizer,
        scheduler,
        sampler,
        scale.scorer(RunScorer(pool, targets)),
        mixture,
        learner=scale.learner(policy),
    )
    if run.resume is not None:
        restore_state(state, run.resume)
        state.sampler.update_weights(state.policy)  # the engine still has step 0's
        run.rewind(cfg, state.step)
    return state


def report_start(scale: Scale, writer: MetricsWriter, run: RunDirectory, step: int) -> str | None:
    """The run's first events: where a Ray run's actors and learner ranks run
    (``placement``), and a resumed run's checkpoint (``resume``). Returns the line that
    sums up the placement, if any."""
    placed = scale.placement()
    if placed is not None:
        writer.event(step, "placement", **placed)
    if run.resume is not None:
        writer.event(step, "resume", checkpoint=str(run.resume), changed=run.changed)
    if placed is None:
        return None
    return (
        f"ray: {len(placed.get('rollout', []))} rollout and "
        f"{len(placed.get('verifier', []))} verifier workers, "
        f"{len(placed['learner'])} learner ranks on {placed['nodes']} node(s)"
    )


def run_training(cfg: Config, live: bool | None = None) -> dict[str, float]:
    """Train ``cfg``'s run (``prorl train``) on this process's rank: fresh, or resumed from
    its run directory's newest checkpoint; returns the last validation's metrics."""
    check_launch(cfg)  # torchrun + vLLM, Ray under torchrun...: refused before anything starts
    if cfg.rollout.sampler == "vllm":  # a missing extra fails before anything is written
        from prorl.sampling.vllm import import_vllm

        import_vllm()
    if cfg.model.compile:
        require_compiler()
    cfg, tasks = checked_tasks(cfg)
    policy, tokenizer = load_trainer_policy(cfg)  # fp32 master weights (model.dtype: the copies')
    scale = Scale.start(cfg)  # one process, or a rank of a learner process group (prorl.scale)
    scale.join(train_rank)
    with (
        contextlib.closing(scale),
        run_directory(cfg, scale) as run,
        contextlib.ExitStack() as stack,
    ):
        state = build_state(cfg, scale, run, policy, tokenizer, tasks, stack)
        writer = MetricsWriter(run.own, cfg.tensorboard and scale.is_main)
        scale.on_worker_event(lambda kind, **f: writer.event(state.step + 1, kind, **f))
        placement = report_start(scale, writer, run, state.step)
        display = Display(cfg.steps, state.step, live) if scale.is_main else QuietDisplay()
        if placement is not None:
            display.message(placement)
        ranks = scale if scale.world > 1 else None
        validate = make_validate(
            cfg, run.own, state.scorer, tasks.val, ranks, progress=display.progress
        )
        try:
            with stop_on_signals(state, display), scale.learner_failures(writer, state):
                final = train_loop(state, writer, display, validate)
            scale.finish()
            return final
        finally:
            display.close()
            writer.close()


def train_rank(cfg: Config) -> None:
    """A learner rank > 0 that rank 0 of a Ray run started (``Scale.join``): the same
    training loop, in its own process; rank 0 shows the progress."""
    run_training(cfg, live=False)


class QuietDisplay(Display):
    """Learner ranks > 0: rank 0 shows the progress."""

    def __init__(self) -> None:
        super().__init__(0, 0, live=False)

    def step(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def message(self, text: str, style: str = "") -> None:
        pass

    def progress(self, text: str) -> None:
        pass


@contextlib.contextmanager
def stop_on_signals(state: TrainState, display: Display) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the step, checkpoint, stop. Second: stop at once
    (KeyboardInterrupt); the atomic save keeps the last complete checkpoint intact."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        # Learner ranks would see the signal at different points of the step and disagree
        # on when to stop: a group stops at once and resumes from its newest checkpoint.
        if state.stop_requested or state.learner is not None:
            raise KeyboardInterrupt
        state.stop_requested = True
        display.message(
            f"{signal.Signals(signum).name}: finishing step {state.step + 1}, then "
            "checkpointing and stopping (send again to stop at once)",
            "yellow",
        )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
