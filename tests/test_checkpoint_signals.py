"""SIGTERM/SIGINT on a real training process: the first finishes the step, checkpoints and
exits 130; a second stops at once and never leaves a broken checkpoint behind."""

import signal
import subprocess
import sys
import time

import pytest

from prorl import checkpoint as ckpt
from prorl.metrics import read_jsonl
from test_checkpoint import TOY


def _start(run, tmp_path, *extra):
    args = ["train", "--run-dir", str(run), *TOY, "steps=200", "checkpoint.every=0", *extra]
    err = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - closed by the caller's wait
    return subprocess.Popen(
        [sys.executable, "-m", "prorl.cli", *args], stdout=subprocess.DEVNULL, stderr=err
    )


def _wait_for_step(proc, run, step):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        rows = read_jsonl(run / "metrics.jsonl")
        if rows and rows[-1]["step"] >= step:
            return
        time.sleep(0.05)
    raise AssertionError("training did not reach the step in time")


# synchronous, and with a rollout thread drawing a step ahead (its checkpoint waits for it)
LOOPS = pytest.mark.parametrize(
    "loop", [[], ["rollout.max_staleness=1", "algo.truncated_is=true"]], ids=["sync", "async"]
)


@LOOPS
def test_sigterm_finishes_step_checkpoints_and_resumes(tmp_path, loop):
    run = tmp_path / "run"
    proc = _start(run, tmp_path, *loop)
    _wait_for_step(proc, run, 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 130
    err = (tmp_path / "stderr.txt").read_text()
    assert "continue with: prorl train --resume" in err, err[-2000:]
    last = read_jsonl(run / "metrics.jsonl")[-1]["step"]
    assert 1 <= last < 200
    dirs = ckpt.checkpoint_dirs(run)
    assert [d.name for d in dirs] == [ckpt.step_name(last)]  # the stop checkpoint only
    assert ckpt.load_trainer(dirs[-1])["step"] == last
    # a different --run-dir value is not needed: the same command continues the run
    res = subprocess.run(
        [sys.executable, "-m", "prorl.cli", "train", "--resume", str(run), f"steps={last + 1}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl")]
    assert steps == list(range(last + 2))


@LOOPS
def test_second_signal_exits_at_once_without_broken_checkpoint(tmp_path, loop):
    run = tmp_path / "run"
    # longer responses so that the second signal usually lands inside the step or the save
    proc = _start(run, tmp_path, "checkpoint.every=1", "rollout.max_new_tokens=48", *loop)
    _wait_for_step(proc, run, 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    # 130 from prorl, or death by SIGINT when the second signal lands in the interpreter's
    # last teardown, after CPython has put SIGINT back to its default action (no Python code
    # runs there to intercept it). A shell reports both as exit status 130.
    assert proc.wait(timeout=300) in (130, -signal.SIGINT)
    err = (tmp_path / "stderr.txt").read_text()
    # stopped at once ("interrupted"), or the first stop had already finished and the second
    # signal came during shutdown: either way a clean exit, never a traceback
    assert "interrupted" in err or "continue with: prorl train --resume" in err, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    # whatever was being saved is gone or complete; the newest complete one loads
    names = [p.name for p in (run / "checkpoints").iterdir()]
    assert not [n for n in names if n.startswith(ckpt.TMP_PREFIX)], names
    newest = ckpt.resume_point(run)
    assert newest is not None and ckpt.load_trainer(newest)["step"] >= 1


def stop_in_first_validation(run, tmp_path, problems):
    """Start a run whose first validation has ``problems`` problems of a procedural task
    (toy-even has only 8), one per generate call (batch_size 2 // eval.n 2): far longer
    than a signal takes to land. SIGTERM it once 2 are stored; return the stored lines."""
    proc = _start(
        run,
        tmp_path,
        "data.val_tasks=rg/leg_counting",
        f"data.val_problems={problems}",
        "eval.n=2",
        "rollout.batch_size=2",
    )
    results = run / "eval" / "results" / "step_000000" / "rg__leg_counting.jsonl"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if results.is_file() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    stored = results.read_text().splitlines()
    assert 2 <= len(stored) < problems
    return stored


def test_sigterm_during_first_validation_stops_between_chunks(tmp_path):
    """A long validation before training does not hold a SIGTERM hostage: it stops after the
    chunk in progress, keeps what it stored, checkpoints step 0 and exits 130."""
    run = tmp_path / "run"
    stop_in_first_validation(run, tmp_path, 400)
    assert not (run / "metrics.jsonl").exists() or all(
        r["step"] == 0 for r in read_jsonl(run / "metrics.jsonl")
    )
    newest = ckpt.resume_point(run)
    assert newest is not None and ckpt.load_trainer(newest)["step"] == 0


def test_resume_from_step_0_logs_step_0_once(tmp_path):
    """The step-0 checkpoint of a stopped first validation: resuming runs step 0 again, so
    its earlier rows are dropped (no duplicate row 0); stored validation chunks are kept."""
    from prorl.metrics import append_jsonl
    from prorl.runtime import rewind_run_dir

    run = tmp_path / "run"
    run.mkdir()
    append_jsonl(run / "metrics.jsonl", {"step": 0, "eval/pass@1": 0.1})
    append_jsonl(run / "events.jsonl", {"step": 0, "event": "checkpoint"})
    chunk = run / "eval" / "results" / "step_000000" / "toy-even.jsonl"
    chunk.parent.mkdir(parents=True)
    chunk.write_text('{"index": 0}\n')
    rewind_run_dir(run, 0)
    assert read_jsonl(run / "metrics.jsonl") == [] and read_jsonl(run / "events.jsonl") == []
    assert chunk.read_text() == '{"index": 0}\n'
    append_jsonl(run / "metrics.jsonl", {"step": 0})
    append_jsonl(run / "metrics.jsonl", {"step": 1})
    rewind_run_dir(run, 1)  # later checkpoints keep their own step's rows
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1]


def test_signal_between_handlers_exits_cleanly(monkeypatch, tmp_path, capsys):
    """The race CI once hit (exit -2 instead of 130): the second Ctrl-C lands after training
    restored Python's default handler and before the CLI's quiet-exit handler is in place.
    Simulated deterministically: the stop arrives, then the KeyboardInterrupt in that window."""
    import prorl.cli as cli
    import prorl.runtime as runtime
    from prorl.train import TrainingStopped

    def stopped(_cfg):
        raise TrainingStopped(2, tmp_path / "run" / "checkpoints" / "step_000002")

    def signal_in_window():
        raise KeyboardInterrupt

    monkeypatch.setattr(runtime, "run_training", stopped)
    monkeypatch.setattr(cli, "_exit_quietly_on_signal", signal_in_window)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *TOY]) == 130
    assert "prorl: error: interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # main() leaves the caller's handler


def test_sigterm_before_training_exits_130(monkeypatch, tmp_path, capsys):
    """A scheduler's SIGTERM while the model loads is a clean stop like Ctrl-C, not a kill."""
    import os

    import prorl.cli as cli
    import prorl.runtime as runtime

    def terminated(_cfg):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this frame long before the sleep ends
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(runtime, "run_training", terminated)
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *TOY]) == 130
    assert "prorl: error: interrupted" in capsys.readouterr().err
