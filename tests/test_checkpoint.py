"""Checkpoints: exact resume after a real SIGKILL, interrupted saves, incompatible configs,
failed saves and export, on the tiny model with the toy task."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from prorl import checkpoint as ckpt
from prorl.config import ConfigError, load_config
from prorl.metrics import read_jsonl
from prorl.runtime import prepare_run_dir, run_training

TOY = [
    "model.name=tiny",
    "model.bf16=false",
    "tensorboard=false",
    "data.tasks=toy-even",
    "data.val_problems=2",
    "rollout.prompts_per_step=2",
    "rollout.n=4",
    "rollout.max_new_tokens=4",
    "algo.micro_batch_size=8",
    "algo.mini_batches=1",
    "algo.kl_coef=1e-3",
    "optim.lr=3e-3",
    "eval.n=2",
    "eval.every=2",
    "verify.workers=0",
    "reset.every=3",
    "checkpoint.every=1",
    "checkpoint.keep_last=2",
    "checkpoint.milestones_every=4",
]
# Keys that measure wall-clock time or throughput differ between any two runs.
TIMING = ("time/", "perf/")


def _cli(*args, **kw):
    cmd = [sys.executable, "-m", "prorl.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def kill_after_checkpoint(run_dir, overrides, step, steps):
    """``prorl train`` in a subprocess, SIGKILLed once the checkpoint of ``step`` is
    complete and before the run of ``steps`` steps could finish."""
    args = ["train", "--run-dir", str(run_dir), *overrides]
    proc = subprocess.Popen(
        [sys.executable, "-m", "prorl.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = run_dir / "checkpoints" / ckpt.step_name(step) / ckpt.MARKER
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert ckpt.checkpoint_dirs(run_dir)[-1].name < ckpt.step_name(steps)


def _rows(path, drop=("time",)):
    return [
        {k: v for k, v in r.items() if not k.startswith(TIMING) and k not in drop}
        for r in read_jsonl(path)
    ]


def _final(run: Path):
    d = ckpt.checkpoint_dirs(run)[-1]
    model = AutoModelForCausalLM.from_pretrained(d / "policy")
    return d, dict(model.named_parameters()), ckpt.load_trainer(d)


def test_exact_resume_after_sigkill(tmp_path):
    steps = 6
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_training(load_config(None, [*TOY, f"steps={steps}", f"run_dir={straight}"]), live=False)

    kill_after_checkpoint(killed, [*TOY, f"steps={steps}"], steps // 2, steps)

    res = _cli("train", "--resume", str(killed))
    assert res.returncode == 0, res.stderr[-3000:]

    d1, p1, t1 = _final(straight)
    d2, p2, t2 = _final(killed)
    assert d1.name == d2.name == ckpt.step_name(steps)
    assert p1.keys() == p2.keys()
    for name in p1:
        assert torch.equal(p1[name], p2[name]), name
    s1, s2 = t1["optimizer"]["state"], t2["optimizer"]["state"]
    assert s1.keys() == s2.keys() and len(s1) > 0
    for i in s1:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1[i][key], s2[i][key]), (i, key)
    assert t1["mixture"] == t2["mixture"]
    untimed = [[{k: v for k, v in r.items() if k != "time"} for r in t["resets"]] for t in (t1, t2)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 1
    ref1 = torch.load(d1 / "reference.pt", weights_only=True)
    ref2 = torch.load(d2 / "reference.pt", weights_only=True)
    assert all(torch.equal(ref1[k], ref2[k]) for k in ref1)

    rows1, rows2 = _rows(straight / "metrics.jsonl"), _rows(killed / "metrics.jsonl")
    assert [r["step"] for r in rows1] == list(range(steps + 1))
    assert rows1 == rows2  # no duplicated or missing steps, same values
    assert read_jsonl(straight / "samples.jsonl") == read_jsonl(killed / "samples.jsonl")
    # checkpoint/resume events are the run's history (the kill may land between a save and
    # its event), not training results
    ev1, ev2 = (
        [e for e in _rows(r / "events.jsonl") if e["event"] not in ("checkpoint", "resume")]
        for r in (straight, killed)
    )
    assert ev1 == ev2
    assert [e["step"] for e in ev1 if e["event"] == "reset"] == [3]
    # validation results: one row per problem per evaluated step, none duplicated
    for run in (straight, killed):
        for f in (run / "eval" / "results").rglob("*.jsonl"):
            idx = [json.loads(ln)["index"] for ln in f.read_text().splitlines()]
            assert sorted(idx) == [0, 1], f
    # keep_last=2 plus the milestone at step 4
    assert [d.name for d in ckpt.checkpoint_dirs(straight)] == [
        ckpt.step_name(s) for s in (4, 5, 6)
    ]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("base") / "run"
    run_training(load_config(None, [*TOY, "steps=2", f"run_dir={run}"]), live=False)
    return run


def test_incomplete_checkpoint_is_skipped(base_run, tmp_path, caplog):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    newest = ckpt.checkpoint_dirs(run)[-1]
    # a save killed after the rename but before the marker, and one killed before the rename
    torn = run / "checkpoints" / ckpt.step_name(3)
    shutil.copytree(newest, torn)
    (torn / ckpt.MARKER).unlink()
    (torn / "trainer.pt").write_bytes(b"truncated")
    shutil.copytree(newest, run / "checkpoints" / f"{ckpt.TMP_PREFIX}{ckpt.step_name(4)}")
    with caplog.at_level("WARNING", logger="prorl"):
        assert prepare_run_dir(run) == newest
    assert "skipping incomplete checkpoint" in caplog.text and "step_00000003" in caplog.text
    # continuing writes a real step 3 over the torn one
    run_training(load_config(None, [*TOY, "steps=3", f"run_dir={run}"]), live=False)
    assert ckpt.checkpoint_dirs(run)[-1].name == ckpt.step_name(3)
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2, 3]
    assert ckpt.load_trainer(ckpt.checkpoint_dirs(run)[-1])["step"] == 3


def test_only_incomplete_checkpoints_is_an_error(tmp_path):
    (tmp_path / "checkpoints" / ckpt.step_name(2)).mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        prepare_run_dir(tmp_path)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("rollout.n=6", "rollout.n: checkpoint 4, now 6"),
        ("seed=1", "seed: checkpoint 0, now 1"),
        ("algo.policy_loss=cispo", "algo.policy_loss: checkpoint 'ppo', now 'cispo'"),
        ("steps=1", "steps=1 is below the checkpoint's step 2"),
        ("algo.kl_coef=0", "the reference cannot come or go on resume"),
    ],
)
def test_incompatible_config_is_a_clear_error(base_run, override, needle):
    before = (base_run / "metrics.jsonl").read_text()
    res = _cli("train", "--resume", str(base_run), override)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert (base_run / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    ("saved", "now", "ok"),
    [
        ((0.001, False), (0.0, True), True),  # KL term dropped, reference still measured
        ((0.0, True), (0.002, False), True),
        ((0.001, False), (0.0, False), False),  # the reference would go
        ((0.0, False), (0.0, True), False),  # the reference would come from nowhere
    ],
)
def test_resume_keeps_or_lacks_the_reference_on_both_sides(saved, now, ok):
    """Resume may change how the reference is used, never whether there is one: the
    checkpoint holds a reference exactly when its config kept one."""

    def cfg(kl_coef: float, track_kl: bool) -> dict:
        return {"steps": 10, "algo": {"kl_coef": kl_coef, "track_kl": track_kl}}

    if ok:
        changed = ckpt.check_compatible(cfg(*saved), cfg(*now), step=5)
        assert "algo.kl_coef" in changed
    else:
        with pytest.raises(ckpt.CheckpointError, match="cannot come or go"):
            ckpt.check_compatible(cfg(*saved), cfg(*now), step=5)


def test_failed_save_is_loud_and_keeps_previous(tmp_path, monkeypatch):
    real = ckpt.save_checkpoint

    def flaky(run_dir, step, *a, **kw):
        if step == 2:  # disk full in the middle of writing step 2

            def full(tmp):
                raise OSError(28, "No space left on device")

            kw["before_rename"] = full
        return real(run_dir, step, *a, **kw)

    import prorl.state

    monkeypatch.setattr(prorl.state, "save_checkpoint", flaky)  # where the state saves with it
    run = tmp_path / "run"
    with pytest.raises(ckpt.CheckpointSaveError, match="No space left on device"):
        run_training(load_config(None, [*TOY, "steps=3", f"run_dir={run}"]), live=False)
    assert [d.name for d in (run / "checkpoints").iterdir()] == [ckpt.step_name(1)]
    assert ckpt.load_trainer(ckpt.checkpoint_dirs(run)[-1])["step"] == 1


def test_export_round_trip(base_run, tmp_path):
    out = tmp_path / "exported"
    res = _cli("export", str(base_run), str(out), "--step", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    from transformers import AutoTokenizer

    exported = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    _, params, _ = _final(base_run)
    ids = torch.tensor([tok("Is 4 even?")["input_ids"]])
    reference = AutoModelForCausalLM.from_pretrained(ckpt.checkpoint_dirs(base_run)[-1] / "policy")
    with torch.no_grad():
        a = torch.log_softmax(exported(ids).logits, -1)
        b = torch.log_softmax(reference(ids).logits, -1)
    assert torch.equal(a, b)
    # the trained weights, not the initial ones
    from prorl.models import load_policy

    init, _ = load_policy("tiny")
    assert not torch.equal(init.model.embed_tokens.weight, exported.model.embed_tokens.weight)
    assert torch.equal(params["model.embed_tokens.weight"], exported.model.embed_tokens.weight)
    res = _cli("export", str(base_run), str(out))
    assert res.returncode == 2 and "not empty" in res.stderr
    res = _cli("export", str(base_run), str(tmp_path / "x"), "--step", "7")
    assert res.returncode == 2 and "no complete checkpoint at step 7" in res.stderr


def test_truncate_jsonl_drops_later_steps_and_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0}\n{"step": 1, "a": 2}\n{"step": 2}\n{"step": 3}\n{"ste')
    assert ckpt.truncate_jsonl(path, 1) == 3
    assert path.read_text() == '{"step": 0}\n{"step": 1, "a": 2}\n'
    assert ckpt.truncate_jsonl(path, 5) == 0


def test_prune_keeps_last_and_milestones(tmp_path):
    for s in range(1, 8):
        d = tmp_path / "checkpoints" / ckpt.step_name(s)
        d.mkdir(parents=True)
        if s != 2:
            (d / ckpt.MARKER).write_text("")
    ckpt.prune(tmp_path, keep_last=2, milestones_every=3)
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == [ckpt.step_name(s) for s in (3, 6, 7)]
