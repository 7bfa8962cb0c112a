"""``prorl reproduce``: run a study's parts in order, each resumable, each publishing its
small results under the study's results directory as soon as it finishes.

Parts: ``screen`` (candidate tasks, base model), ``base`` (the study's tasks, base model),
``train`` (the prolonged run), ``checkpoints`` (each listed checkpoint evaluated like the
base), ``ablation`` (the same run with the ablation's overrides), ``ablation-eval`` (its
final checkpoint evaluated like the base), ``report``. Training and evaluating the ablation
are two parts because together they outlast a working session on a small machine: the
trained ablation is published (and counts as done) before its evaluation starts. Every part
calls the ordinary ``prorl`` commands in a child process (one model in memory at a time),
and those resume on their own: a killed evaluation keeps its finished problems, a killed
run continues from its newest checkpoint.

Two records say what is finished. ``WORK/parts/<part>.done`` lives with the work, and the
committed ledger ``RESULTS/parts.json`` with the results, so a rerun on another machine
(the work directory gone) still skips what was published. Each evaluated model is published
in compact form as soon as its evaluation ends (:mod:`prorl.study.published`) and put back
into a fresh work directory before any evaluation or report; the checkpoints part trains
the run again, up to each checkpoint it still has to evaluate, when the run's checkpoints
went with the machine, and says whether the retrained metrics match the published ones (and
``ablation-eval`` does the same with the ablation's run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import reduce
from math import gcd
from pathlib import Path

from prorl.checkpoint import checkpoint_dirs, step_name, step_of
from prorl.config import load_config
from prorl.evaluate import store
from prorl.metrics import read_jsonl
from prorl.study.config import Study
from prorl.study.published import publish_model, published_models, restore

PARTS = ("screen", "base", "train", "checkpoints", "ablation", "ablation-eval", "report")
RUN_FILES = ("config.yaml", "metrics.jsonl", "events.jsonl")  # small; never checkpoints
MACHINE_METRICS = ("time/", "perf/")  # how fast, not what: differ between identical runs
LEDGER = "parts.json"  # in RESULTS: the parts whose results are published (committed)


class PartFailed(RuntimeError):
    """A child command failed; the message names the part, the command and its log."""


def label_of(step: int) -> str:
    return f"step_{step:06d}"


def first_difference(
    published: Sequence[dict[str, object]], rerun: Sequence[dict[str, object]]
) -> int | None:
    """The first step at which a rerun's metrics differ from the published run's, over the
    steps both reached and the metrics both logged; None when they agree. Timings and
    throughputs (time/*, perf/*) are the machine's, not the run's, and are ignored; a metric
    only one side has (added or removed by a newer prorl) says nothing about the run."""
    by_step = {int(str(r["step"])): r for r in published if "step" in r}
    for row in rerun:
        if "step" not in row:
            continue
        step = int(str(row["step"]))
        old = by_step.get(step)
        if old is None:
            continue
        keys = {k for k in old.keys() & row.keys() if not k.startswith(MACHINE_METRICS)}
        if any(old[k] != row[k] for k in keys):
            return step
    return None


def _last_step(metrics: Sequence[dict[str, object]]) -> int:
    return max((int(str(r["step"])) for r in metrics if "step" in r), default=0)


class StudyRunner:
    def __init__(self, study: Study, log: Callable[[str], None] = print) -> None:
        self.study = study
        self.work = study.work
        self.results = study.results
        self.log = log

    # ------------------------------------------------------------------ plumbing
    def _done(self, part: str) -> Path:
        return self.work / "parts" / f"{part}.done"

    def _ledger(self) -> dict[str, str]:
        path = self.results / LEDGER
        if not path.is_file():
            return {}
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def is_done(self, part: str) -> bool:
        return self._done(part).is_file() or part in self._ledger()

    def _mark_done(self, part: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._done(part).parent.mkdir(parents=True, exist_ok=True)
        self._done(part).write_text(f"{stamp}\n")
        ledger = {**self._ledger(), part: stamp}
        text = json.dumps(ledger, indent=1, sort_keys=True) + "\n"
        store.write_atomic(self.results / LEDGER, text.encode())

    @property
    def evals(self) -> Path:
        """The published (committed) compact copy of every evaluated model."""
        return self.results / "evals"

    def _restore(self, part: str) -> None:
        restored = restore(self.evals, self.eval_dir)
        if restored:
            self.log(f"[{part}] put back the published results of {', '.join(restored)}")

    def _prorl(self, part: str, args: Sequence[str]) -> None:
        """Run ``prorl ARGS`` in a child process, its output appended to WORK/logs/PART.log."""
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "prorl.cli", *args]
        self.log(f"[{part}] prorl {' '.join(args)}")
        with open(logs / f"{part}.log", "a") as out:
            out.write(f"\n$ prorl {' '.join(args)}\n")
            out.flush()
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
        if rc != 0:
            raise PartFailed(
                f"part {part}: `prorl {' '.join(args)}` exited {rc}; see {logs / f'{part}.log'} "
                "(rerun the same command to resume)"
            )

    def _publish(self, src: Path, dest: Path, names: Sequence[str]) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (src / name).is_file():
                shutil.copy2(src / name, dest / name)

    def _report(self, part: str, eval_dir: Path, models: Sequence[str], dest: Path) -> None:
        self._prorl(
            part, ["report", str(eval_dir), "--models", ",".join(models), "--out", str(dest)]
        )

    def _eval(
        self, part: str, model: str, task_config: str, out: Path, sampling: list[str]
    ) -> None:
        self._prorl(
            part,
            ["eval", "--model", model, "--task-config", task_config, "--out", str(out), *sampling],
        )

    def _eval_study(self, part: str, label: str, model: str) -> None:
        """Evaluate ``model`` on the study's tasks as ``label`` and publish it at once."""
        s = self.study
        self._eval(part, f"{label}={model}", s.train_preset, self.eval_dir, s.sampling.eval_args())
        publish_model(self.eval_dir, self.evals, label)

    # ------------------------------------------------------------------ parts
    @property
    def eval_dir(self) -> Path:
        return self.work / "eval"

    def run_dir(self, ablation: bool = False) -> Path:
        return self.work / ("ablation-run" if ablation else "run")

    def part_screen(self) -> None:
        scr = self.study.screen
        if not scr.task_config:
            self.log("[screen] no screen in this study")
            return
        out = self.work / "screen"
        self._eval(
            "screen",
            f"base={self.study.base_model}",
            scr.task_config,
            out,
            scr.sampling.eval_args(),
        )
        self._report("screen", out, ["base"], self.results / "screen")

    def part_base(self) -> None:
        self._restore("base")
        if "base" not in published_models(self.evals):
            self._eval_study("base", "base", self.study.base_model)
        self._report("base", self.eval_dir, ["base"], self.results / "base")

    def _overrides(self, ablation: bool) -> list[str]:
        s = self.study
        return [*s.train_overrides, *(s.ablation_overrides if ablation else ())]

    def _full_steps(self, ablation: bool) -> int:
        return load_config(self.study.train_preset, self._overrides(ablation)).steps

    def _train(
        self, part: str, ablation: bool, until: int | None = None, publish: bool = True
    ) -> None:
        """Train (or resume) the run to step ``until`` (default: the run's full length);
        with ``publish``, a run trained to its full length is published.

        The target is always passed as ``steps=N``: a run resumed after a shorter retrain
        keeps that retrain's ``steps`` in its stored config, and resuming it without the
        override would stop there at once (and publish a short run over the whole one)."""
        s = self.study
        run = self.run_dir(ablation)
        overrides = self._overrides(ablation)
        full = self._full_steps(ablation)
        target = full if until is None else until
        stop = [f"steps={target}"]
        # keep every evaluated checkpoint: milestones at the gcd of the evaluated steps
        keep = (
            [f"checkpoint.milestones_every={reduce(gcd, s.checkpoints)}"] if s.checkpoints else []
        )
        if (run / "config.yaml").is_file() and not checkpoint_dirs(run):
            # killed before its first checkpoint: nothing to resume, and prorl train refuses
            # to start over a run; set it aside (kept, for its logs) and start again
            aside = run.with_name(f"{run.name}.no-checkpoint-{int(time.time())}")
            run.rename(aside)
            self.log(f"[{part}] {run} had no checkpoint to resume; moved to {aside}")
        if (run / "config.yaml").is_file():
            self._prorl(part, ["train", "--resume", str(run), *stop])
        else:
            self._prorl(
                part,
                [
                    "train",
                    *("--preset", s.train_preset, "--run-dir", str(run)),
                    *(*overrides, *keep, *stop),
                ],
            )
        if not publish or target < full:
            return
        reached = _last_step(read_jsonl(run / "metrics.jsonl"))
        if reached < full:
            raise PartFailed(
                f"part {part}: the run in {run} stopped at step {reached} of {full}; nothing "
                "was published (rerun the same command to resume)"
            )
        self._publish(run, self.results / part, RUN_FILES)
        if (run / "eval" / "eval.json").is_file():  # the run's own validation, every step_N
            self._prorl(
                part, ["report", str(run), "--out", str(self.results / part / "validation")]
            )

    def part_train(self) -> None:
        self._train("train", ablation=False)

    @staticmethod
    def _checkpoint_path(run: Path, step: int) -> Path:
        return run / "checkpoints" / step_name(step) / "policy"

    def _checkpoint(self, run: Path, step: int) -> Path:
        path = self._checkpoint_path(run, step)
        if not path.is_dir():
            raise PartFailed(
                f"checkpoint {path} is missing: the run did not keep step {step} "
                "(its checkpoint.every must divide the study's checkpoints)"
            )
        return path

    def _retrain_to(self, part: str, step: int, ablation: bool = False) -> None:
        """The run's checkpoint at ``step`` is gone (another machine): train the run again up
        to ``step`` (seeded, so the same run) and compare with the published metrics."""
        run = self.run_dir(ablation)
        trained_by = "ablation" if ablation else "train"
        self.log(f"[{part}] no checkpoint at step {step} here: training the run to it again")
        # never published: the published run is the training part's; this only recreates a
        # checkpoint, and is checked against it
        self._train(trained_by, ablation=ablation, until=step, publish=False)
        published = self.results / trained_by / "metrics.jsonl"
        if not published.is_file():
            return
        rerun = read_jsonl(run / "metrics.jsonl")
        diff = first_difference(read_jsonl(published), rerun)
        if diff is None:
            self.log(
                f"[{part}] the retrained run matches the published metrics to step "
                f"{_last_step(rerun)}"
            )
        else:
            self.log(
                f"[{part}] WARNING: the retrained run's metrics differ from the published "
                f"ones from step {diff} (another machine or library version); the checkpoint "
                "evaluations are of the retrained run"
            )

    def _evaluate_checkpoint(self, part: str, label: str, step: int, ablation: bool) -> None:
        """Evaluate the run's checkpoint at ``step`` as ``label`` (training the run to it
        again first when the checkpoint went with another machine) and publish it."""
        if not self._checkpoint_path(self.run_dir(ablation), step).is_dir():
            self._retrain_to(part, step, ablation)
        ckpt = self._checkpoint(self.run_dir(ablation), step)
        self._eval_study(part, label, str(ckpt))

    def part_checkpoints(self) -> None:
        s = self.study
        self._restore("checkpoints")
        done = published_models(self.evals)
        for step in s.checkpoints:
            if label_of(step) not in done:
                self._evaluate_checkpoint("checkpoints", label_of(step), step, ablation=False)
        models = ["base", *(label_of(step) for step in s.checkpoints)]
        self._report("checkpoints", self.eval_dir, models, self.results / "report")

    def part_ablation(self) -> None:
        s = self.study
        if not s.ablation_overrides:
            self.log("[ablation] no ablation in this study")
            return
        self._train("ablation", ablation=True)

    def part_ablation_eval(self) -> None:
        s = self.study
        if not s.ablation_overrides:
            self.log("[ablation-eval] no ablation in this study")
            return
        self._restore("ablation-eval")
        if s.ablation_label in published_models(self.evals):
            self.log(f"[ablation-eval] {s.ablation_label} is evaluated and published already")
            return
        # the ablation's final model: the run's last step, which the run always checkpoints
        final = self._full_steps(ablation=True)
        self._evaluate_checkpoint("ablation-eval", s.ablation_label, final, ablation=True)

    def part_report(self) -> None:
        from prorl.study.curves import write_curves

        s = self.study
        self._restore("report")
        models = ["base", *(label_of(step) for step in s.checkpoints)]
        self._report("report", self.eval_dir, models, self.results / "report")
        # the published copies: the runs' own directories may be on a machine that is gone
        runs = {"ProRL recipe": self.results / "train"}
        if s.ablation_overrides:
            self._report(
                "report",
                self.eval_dir,
                ["base", s.ablation_label],
                self.results / "ablation-report",
            )
            if s.checkpoints:
                # the direct question: the run's final model in the base's place, so every
                # interval is paired over problems as ablation minus recipe
                self._report(
                    "report",
                    self.eval_dir,
                    [label_of(s.checkpoints[-1]), s.ablation_label],
                    self.results / "recipe-vs-ablation",
                )
            runs[f"{s.ablation_label}: {' '.join(s.ablation_overrides)}"] = (
                self.results / "ablation"
            )
        write_curves(runs, self.results / "curves.png", self.results / "curves.json")

    # ------------------------------------------------------------------ status
    def _run_state(self, ablation: bool) -> str:
        run = self.run_dir(ablation)
        if not (run / "config.yaml").is_file():
            return "not started here"
        ckpts = checkpoint_dirs(run)
        logged = _last_step(read_jsonl(run / "metrics.jsonl"))
        at = f"step {logged} of {self._full_steps(ablation)} logged, "
        if not ckpts:
            return at + "no checkpoint yet"
        return at + f"checkpoints at steps {', '.join(str(step_of(d)) for d in ckpts)}"

    def _in_progress(self, published: Sequence[str]) -> list[str]:
        """Models of the work directory's evaluation not yet published, with how far each
        task got (problems stored of those asked for)."""
        man = store.read_manifest(self.eval_dir)
        if man is None:
            return []
        want = self.study.sampling.problems
        out = []
        for entry in man["models"]:
            model = entry["label"]
            if model in published:
                continue
            done = [
                len(store.read_rows(store.results_path(self.eval_dir, model, t["name"])))
                for t in man["tasks"]
            ]
            finished = sum(d >= want for d in done)
            out.append(
                f"{model}: {finished} of {len(done)} tasks, {sum(done)} of "
                f"{want * len(done)} problems"
            )
        return out

    def status(self) -> list[str]:
        """What is finished, what is published and where each run stands: read-only, so it is
        safe beside a running study."""
        ledger = self._ledger()
        lines = [f"study {self.study.name}: work {self.work}, results {self.results}"]
        todo = []
        width = max(len(part) for part in PARTS)
        for part in PARTS:
            if part in ledger:
                state = f"done {ledger[part]} (published)"
            elif self._done(part).is_file():
                state = f"done {self._done(part).read_text().strip()} (this machine only)"
            else:
                state = "to do"
                todo.append(part)
            lines.append(f"  {part:<{width}} {state}")
        models = published_models(self.evals)
        lines.append(f"  evaluated models published: {', '.join(models) or 'none'}")
        lines.extend(f"  evaluation in progress: {p}" for p in self._in_progress(models))
        lines.append(f"  run:          {self._run_state(False)}")
        if self.study.ablation_overrides:
            lines.append(f"  ablation run: {self._run_state(True)}")
        lines.append(
            f"  next: prorl reproduce {self.study.name} --parts {','.join(todo)}"
            if todo
            else "  every part is done"
        )
        return lines

    # ------------------------------------------------------------------ driver
    def run(self, parts: Sequence[str] = PARTS, force: bool = False) -> None:
        for part in parts:
            if part not in PARTS:
                raise ValueError(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
        for part in PARTS:
            if part not in parts:
                continue
            if self.is_done(part) and not force:
                self.log(f"[{part}] done already ({self.results / LEDGER}); skipped")
                continue
            t0 = time.monotonic()
            getattr(self, f"part_{part.replace('-', '_')}")()
            self._mark_done(part)
            minutes = (time.monotonic() - t0) / 60
            self.log(f"[{part}] finished in {minutes:.1f} min; results in {self.results}")
