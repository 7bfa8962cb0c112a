"""Generate, score and store: the resumable half of ``prorl eval`` (and of training's eval).

Per (model, task) the problems of the held-out split are generated in chunks; a problem's
line is appended (with fsync) only once all its n samples are scored. A rerun with the same
``--out`` reads what is there and generates only the missing problems. Samples of problem i
depend only on (seed, task, i) - the sampler draws per-prompt noise - so a resumed evaluation
stores exactly what an uninterrupted one would.

This module imports no torch at import time; models load inside ``load_model``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from prorl.evaluate import store
from prorl.evaluate.passk import DEFAULT_THRESHOLD, default_ks
from prorl.sampling.base import derive_seed  # pure hashing, no torch
from prorl.tasks import Task, get_task
from prorl.tasks.selfcheck import floor_rewards, preflight
from prorl.types import Example, SamplingParams, Score
from prorl.verify.registry import as_score

# Texts of a problem's n samples -> their scores. The default scores in-process with the
# task's verifier; pass a pool-backed scorer to enforce timeouts.
Scorer = Callable[[Task, Example, Sequence[str]], list[Score]]
# Where progress lines go: a stream (stderr for `prorl eval`), a callable (training's
# display) or nowhere.
Log = TextIO | Callable[[str], None] | None
DEFAULT_PROBLEMS = 100  # for unbounded (procedural) splits


@dataclass(frozen=True)
class EvalSettings:
    """What is generated. n, sampling, split and seed must match to resume into a directory."""

    n: int = 64
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 512
    split: str = "test"
    problems: int | None = None  # per task; None = the whole split (DEFAULT_PROBLEMS if unbounded)
    seed: int = 0
    chunk: int = 4  # problems per generate call and per durable write

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--n must be >= 1, got {self.n}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top-p must lie in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.problems is not None and self.problems < 1:
            raise ValueError(f"--problems must be >= 1, got {self.problems}")
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"--split must be val, test or train, got {self.split!r}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.max_new_tokens)


def parse_tasks(spec: str) -> list[str]:
    names = list(dict.fromkeys(t.strip() for t in spec.split(",") if t.strip()))
    if not names:
        raise ValueError("--tasks is empty: give comma-separated task names (see `prorl tasks`)")
    return names


def resolve_tasks(names: Sequence[str]) -> dict[str, Task]:
    """Build every task up front so an unknown name fails before anything is generated."""
    return {name: get_task(name) for name in names}


def problem_count(task: Task, settings: EvalSettings) -> int:
    size = task.size(settings.split)
    if size is None:
        return settings.problems or DEFAULT_PROBLEMS
    if size == 0:
        raise ValueError(f"task {task.name} has no {settings.split} split; try --split val")
    return min(size, settings.problems or size)


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``label=path`` or just ``path``/name (label: the name, or the path's last part)."""
    label, sep, path = spec.partition("=")
    if not sep:
        path = spec
        label = Path(spec.rstrip("/")).name or spec
    if not path.strip() or not label.strip():
        raise ValueError(f"bad --model {spec!r}: expected NAME_OR_PATH or LABEL=NAME_OR_PATH")
    return store.slug(label), path


def prepare_dir(
    out: Path,
    settings: EvalSettings,
    tasks: dict[str, Task],
    ks: Sequence[int] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    task_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Create or reopen ``out``; refuse (ValueError, nothing written) on conflicting settings,
    including a task stored with other task settings (``task_settings``, by name)."""
    old = store.read_manifest(out)
    fixed = {
        "n": settings.n,
        "split": settings.split,
        "seed": settings.seed,
        "sampling": asdict(settings.params),
    }
    if old is None:
        if out.exists() and any(out.iterdir()):
            raise ValueError(
                f"{out} exists and is not a prorl evaluation directory; use another --out"
            )
        man: dict[str, Any] = {"version": store.FORMAT_VERSION, "models": [], "tasks": [], **fixed}
    else:
        diff = [
            f"{k}: stored {old.get(k)!r}, asked {v!r}" for k, v in fixed.items() if old.get(k) != v
        ]
        if diff:
            raise ValueError(
                f"{out} holds results generated with other settings ({'; '.join(diff)}); "
                "resume with the same settings or choose another --out"
            )
        man = dict(old)
    given = {name: dict((task_settings or {}).get(name, {})) for name in tasks}
    known = {t["name"]: t.get("settings", {}) for t in man["tasks"]}
    clash = [n for n in tasks if n in known and known[n] != given[n]]
    if clash:
        raise ValueError(
            f"{out} holds {', '.join(clash)} evaluated with other task settings "
            f"(stored {known[clash[0]]!r}, asked {given[clash[0]]!r}); choose another --out"
        )
    man["tasks"] = man["tasks"] + [
        {"name": name, "domain": getattr(t, "domain", "other")}
        | ({"settings": given[name]} if given[name] else {})
        for name, t in tasks.items()
        if name not in known
    ]
    man["ks"] = list(ks) if ks else man.get("ks") or default_ks(settings.n)
    man["threshold"] = threshold
    store.write_manifest(out, man)
    return man


def register_model(out: Path, label: str, spec: str) -> None:
    """Record a model (after it loaded) in the manifest; a label keeps its first spec."""
    _check_label(out, label, spec)
    man = store.read_manifest(out)
    assert man is not None, "prepare_dir first"
    if all(m["label"] != label for m in man["models"]):
        man["models"] = [*man["models"], {"label": label, "spec": spec}]
        store.write_manifest(out, man)


def default_scorer(task: Task, example: Example, texts: Sequence[str]) -> list[Score]:
    out = []
    for text in texts:
        try:
            out.append(as_score(task.score(text, example)))
        except Exception as e:  # a verifier bug is the harness's fault, not the model's
            out.append(Score(0.0, "INFRA_ERROR", {"error": repr(e)[:200]}))
    return out


def pool_scorer(pool: Any, settings: Mapping[str, Mapping[str, Any]] | None = None) -> Scorer:
    """Score with a ``VerifierPool`` (hard per-item deadlines; the task is rebuilt in the
    workers from its registry name and ``settings[name]``, so both must reach it)."""
    from prorl.scoring import ScoreTarget

    known = dict(settings or {})

    def score(task: Task, example: Example, texts: Sequence[str]) -> list[Score]:
        target = ScoreTarget.task(task.name, **known.get(task.name, {}))
        return list(pool.score(target, list(texts), [example] * len(texts)))

    return score


class EvaluationStopped(Exception):
    """An evaluation gave up between chunks because it was asked to stop."""


def evaluate_task(
    sampler: Any,
    tokenizer: Any,
    encode: Callable[[Any, Sequence[Example]], list[list[int]]],
    task: Task,
    out: Path,
    label: str,
    settings: EvalSettings,
    scorer: Scorer = default_scorer,
    log: Log = sys.stderr,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Generate and store the missing problems of one (model, task); return how many were new.

    ``should_stop`` is asked before each chunk: when it says yes, ``EvaluationStopped`` is
    raised and the finished chunks stay stored (a later call resumes after them)."""
    path = store.results_path(out, label, task.name)
    done = {int(r["index"]) for r in store.read_rows(path)}
    total = problem_count(task, settings)
    todo = [i for i in range(total) if i not in done]
    t0 = time.monotonic()
    for start in range(0, len(todo), settings.chunk):
        if should_stop is not None and should_stop():
            raise EvaluationStopped(f"{task.name}: stopped after {len(done) + start} problems")
        idx = todo[start : start + settings.chunk]
        examples = [task.example(i, settings.split) for i in idx]
        seeds = [derive_seed(settings.seed, task.name, settings.split, i) for i in idx]
        groups = sampler.generate(encode(tokenizer, examples), settings.n, settings.params, seeds)
        rows = [  # with the null floor: trivial responses scored the same way, same problem
            _row(
                i,
                ex,
                samples,
                scorer(task, ex, [s.text for s in samples]),
                floor_rewards(task, ex, scorer),
            )
            for i, ex, samples in zip(idx, examples, groups, strict=True)
        ]
        store.append_rows(path, rows)
        finished = len(done) + start + len(idx)
        _say(
            log,
            f"[{label}] {task.name}: {finished}/{total} problems ({time.monotonic() - t0:.0f} s)",
        )
    return len(todo)


def _say(log: Log, text: str) -> None:
    if log is None:
        return
    if callable(log):
        log(text)
    else:
        print(text, file=log, flush=True)


def _row(
    index: int,
    ex: Example,
    samples: Sequence[Any],
    scores: Sequence[Score],
    floor: dict[str, float],
) -> dict[str, Any]:
    return {
        "index": index,
        "uid": ex.uid,
        "task": ex.task,
        "question": ex.question,
        "answer": ex.answer,
        "floor": floor,  # reward of each trivial response (prorl.tasks.selfcheck.TRIVIAL)
        "samples": [
            {
                "text": s.text,
                "num_tokens": len(s.token_ids),
                "finish_reason": s.finish_reason,
                "reward": sc.reward,
                "reason": sc.reason,
                "formatted": sc.formatted,
            }
            for s, sc in zip(samples, scores, strict=True)
        ],
    }


def load_model(
    spec: str,
    dtype: str = "float32",
    batch_size: int = 32,
    bf16: bool = False,
    sampler: str = "hf",
    device: str = "auto",
) -> tuple[Any, Any, Any]:
    """(sampler, tokenizer, encode) for a model spec; ModelLoadError (a ValueError) if it fails,
    a ConfigError (also a ValueError) when ``sampler="vllm"`` but vllm is not installed.

    bf16 autocast is off by default: measured here, HF decoding of SmolLM2-135M ran about 3x
    slower under CPU bf16 autocast than in fp32 (16 x 16 tokens: 54 s vs 17 s). ``device``
    places the HF sampler's model (``auto``: the first GPU when there is one; vLLM places its
    own engine)."""
    from prorl.device import resolve_device, visible_gpus
    from prorl.models import encode_prompts, load_policy

    if sampler not in ("hf", "vllm"):
        raise ValueError(f"--sampler must be hf or vllm, got {sampler!r}")
    model, tokenizer = load_policy(spec, dtype=dtype)
    if sampler == "vllm":
        from prorl.sampling.vllm import VLLMSampler

        return VLLMSampler(model, tokenizer, max_num_seqs=batch_size), tokenizer, encode_prompts
    from prorl.sampling.hf import HFSampler

    model.to(resolve_device(device, cuda_count=visible_gpus(), key="--device"))
    return HFSampler(model, tokenizer, batch_size=batch_size, bf16=bf16), tokenizer, encode_prompts


def check_model_specs(specs: Sequence[str]) -> None:
    """Cheap pre-flight: a spec that is neither a known name nor an existing path fails now,
    before any model of the list has been evaluated."""
    from prorl.models import known_models

    for spec in specs:
        if spec not in known_models() and not Path(spec).expanduser().exists():
            raise ValueError(
                f"cannot load model {spec!r}: not a known model ({', '.join(known_models())}) "
                "and no such file or folder"
            )


def run_evaluation(
    models: Sequence[str],
    task_names: Sequence[str] | Mapping[str, Task],
    out: Path,
    settings: EvalSettings,
    *,
    ks: Sequence[int] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    dtype: str = "float32",
    batch_size: int = 32,
    bf16: bool = False,
    sampler: str = "hf",
    device: str = "auto",
    scorer: Scorer | None = None,
    verify_timeout_s: float = 10.0,
    loader: Callable[[str], tuple[Any, Any, Any]] | None = None,
    log: Log = sys.stderr,
    self_check: str = "strict",
    task_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, int]:
    """Evaluate every model on every task into ``out``; return new problems per model label.

    ``task_names`` are registry names built with default settings, or tasks already built
    (``prorl eval --task-config``) whose settings ``task_settings`` gives by name: the
    verifier workers rebuild each task from them, and the manifest records them.

    Validation (tasks and their self-check, settings, model specs) happens before anything
    is generated. Without a ``scorer``, responses are scored in a ``VerifierPool`` with hard
    deadlines. ``self_check``: strict (a task that trivial responses can pass is an error),
    exclude (leave it out, with a warning) or skip.
    """
    out = Path(out)
    tasks = dict(task_names) if isinstance(task_names, Mapping) else resolve_tasks(task_names)
    dropped = preflight(
        tasks, self_check, warn=lambda m: _say(log, m), exclude_hint="--self-check exclude"
    )
    tasks = {name: t for name, t in tasks.items() if name not in dropped}
    if not tasks:
        raise ValueError("every task failed its self-check; nothing to evaluate")
    labelled = [parse_model_spec(m) for m in models]
    if len({lab for lab, _ in labelled}) != len(labelled):
        raise ValueError("two --model arguments share a label; name them with LABEL=PATH")
    if loader is None:
        check_model_specs([spec for _, spec in labelled])
        from prorl.device import resolve_device, visible_gpus

        resolve_device(device, cuda_count=visible_gpus(), key="--device")  # a missing GPU too
    prepare_dir(out, settings, tasks, ks, threshold, task_settings)
    load = loader or (lambda spec: load_model(spec, dtype, batch_size, bf16, sampler, device))
    pool = None
    new: dict[str, int] = {}
    try:
        for label, spec in labelled:
            _check_label(out, label, spec)
            engine, tokenizer, encode = load(spec)
            register_model(out, label, spec)
            if scorer is None:  # started after a model loaded: a bad model fails fast
                from prorl.scoring import VerifierPool

                pool = VerifierPool(timeout_s=verify_timeout_s)
                scorer = pool_scorer(pool, task_settings)
            try:
                new[label] = sum(
                    evaluate_task(
                        engine, tokenizer, encode, task, out, label, settings, scorer, log
                    )
                    for task in tasks.values()
                )
            finally:  # a vLLM engine holds memory (and on GPU the device): one at a time
                if hasattr(engine, "close"):
                    engine.close()
    finally:
        if pool is not None:
            pool.close()
    return new


def evaluate_checkpoint(
    sampler: Any,
    tokenizer: Any,
    encode: Callable[[Any, Sequence[Example]], list[list[int]]],
    tasks: Sequence[str] | dict[str, Task],
    out: Path,
    label: str,
    settings: EvalSettings,
    scorer: Scorer = default_scorer,
    *,
    spec: str | None = None,
    log: Log = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Training's periodic evaluation: store a live policy's samples under ``out`` (e.g.
    RUN_DIR/eval) as model ``label`` (e.g. ``step_000200``) and return its flat
    ``eval/<task>/pass@k`` metrics. ``prorl report RUN_DIR`` then compares the checkpoints."""
    from prorl.evaluate.analysis import analyse, load_results, summary_metrics

    task_map = tasks if isinstance(tasks, dict) else resolve_tasks(tasks)
    out = Path(out)
    prepare_dir(out, settings, task_map)
    register_model(out, label, spec or label)
    for task in task_map.values():
        evaluate_task(
            sampler, tokenizer, encode, task, out, label, settings, scorer, log, should_stop
        )
    # Few replicates: the metrics use point estimates; the report recomputes intervals.
    return summary_metrics(analyse(load_results(out), n_boot=10), store.slug(label))


def _check_label(out: Path, label: str, spec: str) -> None:
    man = store.read_manifest(out) or {"models": []}
    for m in man["models"]:
        if m["label"] == label and m["spec"] != spec:
            raise ValueError(
                f"model label {label!r} already holds results of {m['spec']!r}, not {spec!r}; "
                f"name it differently with --model OTHER_LABEL={spec}"
            )
