"""``prorl reproduce``: run a study's parts in order, each resumable, each publishing its
small results under the study's results directory as soon as it finishes.

Parts: ``screen`` (candidate tasks, base model), ``base`` (the study's tasks, base model),
``train`` (the prolonged run), ``checkpoints`` (each listed checkpoint evaluated like the
base), ``ablation`` (the same run with the ablation's overrides, its final checkpoint
evaluated), ``report``. Every part calls the ordinary ``prorl`` commands in a child process
(one model in memory at a time), and those resume on their own: a killed evaluation keeps
its finished problems, a killed run continues from its newest checkpoint. A part marks
itself done (``WORK/parts/<part>.done``) only after its results are published, so a rerun
skips exactly the finished parts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import reduce
from math import gcd
from pathlib import Path

from prorl.checkpoint import checkpoint_dirs, step_name
from prorl.study.config import Study

PARTS = ("screen", "base", "train", "checkpoints", "ablation", "report")
RUN_FILES = ("config.yaml", "metrics.jsonl", "events.jsonl")  # small; never checkpoints


class PartFailed(RuntimeError):
    """A child command failed; the message names the part, the command and its log."""


def label_of(step: int) -> str:
    return f"step_{step:06d}"


class StudyRunner:
    def __init__(self, study: Study, log: Callable[[str], None] = print) -> None:
        self.study = study
        self.work = study.work
        self.results = study.results
        self.log = log

    # ------------------------------------------------------------------ plumbing
    def _done(self, part: str) -> Path:
        return self.work / "parts" / f"{part}.done"

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

    # ------------------------------------------------------------------ parts
    @property
    def eval_dir(self) -> Path:
        return self.work / "eval"

    def run_dir(self, ablation: bool = False) -> Path:
        return self.work / ("ablation-run" if ablation else "run")

    def final_label(self) -> str:
        return label_of(self.study.checkpoints[-1]) if self.study.checkpoints else "base"

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
        s = self.study
        self._eval(
            "base", f"base={s.base_model}", s.train_preset, self.eval_dir, s.sampling.eval_args()
        )
        self._report("base", self.eval_dir, ["base"], self.results / "base")

    def _train(self, part: str, ablation: bool) -> None:
        s = self.study
        run = self.run_dir(ablation)
        overrides = [*s.train_overrides, *(s.ablation_overrides if ablation else ())]
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
            self._prorl(part, ["train", "--resume", str(run)])
        else:
            self._prorl(
                part,
                ["train", "--preset", s.train_preset, "--run-dir", str(run), *overrides, *keep],
            )
        self._publish(run, self.results / part, RUN_FILES)
        if (run / "eval" / "eval.json").is_file():  # the run's own validation, every step_N
            self._prorl(
                part, ["report", str(run), "--out", str(self.results / part / "validation")]
            )

    def part_train(self) -> None:
        self._train("train", ablation=False)

    def _checkpoint(self, run: Path, step: int) -> Path:
        path = run / "checkpoints" / step_name(step) / "policy"
        if not path.is_dir():
            raise PartFailed(
                f"checkpoint {path} is missing: the run did not keep step {step} "
                "(its checkpoint.every must divide the study's checkpoints)"
            )
        return path

    def part_checkpoints(self) -> None:
        s = self.study
        for step in s.checkpoints:
            ckpt = self._checkpoint(self.run_dir(), step)
            model = f"{label_of(step)}={ckpt}"
            self._eval("checkpoints", model, s.train_preset, self.eval_dir, s.sampling.eval_args())
        models = ["base", *(label_of(step) for step in s.checkpoints)]
        self._report("checkpoints", self.eval_dir, models, self.results / "report")

    def part_ablation(self) -> None:
        s = self.study
        if not s.ablation_overrides:
            self.log("[ablation] no ablation in this study")
            return
        self._train("ablation", ablation=True)
        ckpt = self._checkpoint(self.run_dir(True), s.checkpoints[-1])
        label = f"{s.ablation_label}={ckpt}"
        self._eval("ablation", label, s.train_preset, self.eval_dir, s.sampling.eval_args())

    def part_report(self) -> None:
        from prorl.study.curves import write_curves

        s = self.study
        models = ["base", *(label_of(step) for step in s.checkpoints)]
        self._report("report", self.eval_dir, models, self.results / "report")
        runs = {"ProRL recipe": self.run_dir()}
        if s.ablation_overrides:
            self._report(
                "report",
                self.eval_dir,
                ["base", s.ablation_label],
                self.results / "ablation-report",
            )
            runs[f"{s.ablation_label}: {' '.join(s.ablation_overrides)}"] = self.run_dir(True)
        write_curves(runs, self.results / "curves.png", self.results / "curves.json")

    # ------------------------------------------------------------------ driver
    def run(self, parts: Sequence[str] = PARTS, force: bool = False) -> None:
        for part in parts:
            if part not in PARTS:
                raise ValueError(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
        for part in PARTS:
            if part not in parts:
                continue
            if self._done(part).is_file() and not force:
                self.log(f"[{part}] done already ({self._done(part)}); skipped")
                continue
            t0 = time.monotonic()
            getattr(self, f"part_{part}")()
            self._done(part).parent.mkdir(parents=True, exist_ok=True)
            self._done(part).write_text(f"{time.time():.0f}\n")
            minutes = (time.monotonic() - t0) / 60
            self.log(f"[{part}] finished in {minutes:.1f} min; results in {self.results}")
