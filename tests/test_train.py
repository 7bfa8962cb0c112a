"""The training loop end to end on the tiny model: learning, KL, resets, CLI, bad input."""

import json
import subprocess
import sys

import pytest

from prorl.config import load_config
from prorl.metrics import read_jsonl
from prorl.runtime import run_training

TOY = [
    "model.name=tiny",
    "model.bf16=false",
    "tensorboard=false",
    "data.tasks=toy-even",
    "data.val_problems=8",
    "rollout.prompts_per_step=4",
    "rollout.n=8",
    "rollout.max_new_tokens=8",
    "algo.micro_batch_size=16",
    "eval.n=4",
    "eval.every=0",
    "verify.workers=1",
]


def _train(tmp_path, *overrides):
    cfg = load_config(None, [*TOY, f"run_dir={tmp_path / 'run'}", *overrides])
    final = run_training(cfg, live=False)
    return final, read_jsonl(tmp_path / "run" / "metrics.jsonl")


def test_rl_raises_success_rate_on_toy_task(tmp_path):
    # 3-token responses: success (reward 1) means every token even, 1 in 8 for a random model
    final, rows = _train(
        tmp_path, "steps=12", "optim.lr=1e-2", "algo.kl_coef=1e-3", "rollout.max_new_tokens=3"
    )
    steps = [r for r in rows if "train/reward" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    early = sum(r["train/reward"] for r in steps[:3]) / 3
    late = sum(r["train/reward"] for r in steps[-3:]) / 3
    # A random model scores ~0.5; a working policy gradient pushes mass to even token ids.
    assert late > early + 0.08, (early, late)
    # held-out success rate (not mean reward) rose, and clearly above the null floor
    assert final["eval/pass@1"] > rows[0]["eval/pass@1"] + 0.2, (rows[0], final)
    assert final["eval/gain"] > 0.2
    # The policy moved away from the reference, and the KL term measured it.
    assert steps[0]["policy/kl"] == pytest.approx(0.0, abs=1e-6)
    assert steps[-1]["policy/kl"] > 1e-4
    for key in ("policy/entropy", "policy/clipfrac", "time/generate_s", "perf/tokens_per_s"):
        assert key in steps[-1]


def test_reset_makes_reference_equal_policy(tmp_path):
    _, rows = _train(tmp_path, "steps=4", "optim.lr=3e-3", "algo.kl_coef=1e-3", "reset.every=2")
    by_step = {r["step"]: r for r in rows}
    assert by_step[2]["reset"] == 1.0
    assert by_step[2]["policy/kl"] > 0  # drifted during steps 1-2
    # Step 3 starts right after the reset: pi == pi_ref, so KL of its first micro-batch is 0.
    assert by_step[3]["policy/kl"] < by_step[2]["policy/kl"]
    events = read_jsonl(tmp_path / "run" / "events.jsonl")
    assert [e["step"] for e in events if e["event"] == "reset"] == [2]


def test_all_equal_rewards_skip_update_without_crash(tmp_path):
    # The random tiny model never answers leg counting: every group is all-zero and dropped.
    _, rows = _train(tmp_path, "steps=2", "data.tasks=rg/leg_counting", "rollout.max_rounds=2")
    steps = [r for r in rows if "train/reward" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["filter/groups"] == 0 and r["filter/saturated"] == 1.0
        assert "policy/kl" not in r  # no update happened


def test_no_validation_when_val_problems_is_zero(tmp_path):
    final, rows = _train(tmp_path, "steps=1", "data.val_problems=0")
    assert final == {}
    assert [r["step"] for r in rows if "train/reward" in r] == [1]
    assert not any(k.startswith("eval/") for r in rows for k in r)


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "prorl.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_cli_debug_preset_end_to_end(tmp_path):
    run = tmp_path / "dbg"
    proc = _cli("train", "--preset", "debug", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_jsonl(run / "metrics.jsonl")
    assert rows[0]["step"] == 0 and "eval/pass@1" in rows[0] and "eval/floor" in rows[0]
    assert rows[-1]["step"] == 3
    assert "train/reward/toy-even" in rows[-1] and "train/reward/rg/leg_counting" in rows[-1]
    assert (run / "config.yaml").is_file()
    assert "validation before training" in proc.stdout
    assert "validation after training: success" in proc.stdout
    assert "null floor" in proc.stdout and "held-out success rate (pass@1" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["optim.lrr=1"], "optim.lrr: unknown key"),
        (["rollout.n=abc"], "rollout.n: expected an integer"),
        (["data.tasks=no-such-task"], "unknown task 'no-such-task'"),
        (["model.name=/nonexistent/model"], "does not exist"),
        (["--preset", "nope"], "preset: 'nope' not found"),
        (["model.device=tpu"], "model.device: choose auto, cpu, cuda or cuda:N"),
        # this machine has no GPU: refused after the model loads, before anything is written
        (["model.device=cuda"], "model.device: model.device=cuda, but this process sees no"),
        (["scale.backend=ray", "scale.gpus_per_worker=1"], "puts the learner ranks on GPUs"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, args, needle):
    run = tmp_path / "existing"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    before = sorted(p.name for p in run.iterdir())
    proc = _cli("train", "--run-dir", str(tmp_path / "fresh"), *args)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "fresh").exists()
    # an existing run is never written over
    proc = _cli("train", "--preset", "debug", "--run-dir", str(run))
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_presets_all_load():
    from prorl.config import list_presets

    names = list_presets()
    assert {"debug", "cpu-smollm2", "r1-distill-1.5b"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.steps > 0
    assert json.loads(json.dumps(load_config("debug").rollout.n)) == 4


def test_compile_without_a_cpp_compiler_is_a_clear_error(tmp_path, monkeypatch):
    from prorl import policy
    from prorl.config import ConfigError

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(policy.shutil, "which", lambda _name: None)
    cfg = load_config(None, [*TOY, "model.compile=true", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="model.compile.*C\\+\\+ compiler"):
        run_training(cfg, live=False)
    assert not (tmp_path / "run").exists()  # checked before anything is written


@pytest.mark.parametrize("bf16", ["false", "true"])
def test_gradient_checkpointing_changes_memory_not_the_update(tmp_path, bf16):
    """``model.gradient_checkpointing`` recomputes each layer's forward during backward; on
    CPU that recomputation must use the trainer's (eager) attention too, or torch refuses
    the mismatched saved tensors (a crash at the first backward until 2026-12-01)."""
    from ray_runs import assert_close, policy_params

    args = [
        "steps=2",
        "optim.lr=3e-3",
        "algo.kl_coef=1e-3",
        "algo.mini_batches=2",
        "checkpoint.every=1",
        f"model.bf16={bf16}",
    ]
    plain, with_gc = tmp_path / "plain", tmp_path / "gc"
    _train(plain, *args)
    _train(with_gc, *args, "model.gradient_checkpointing=true")
    rows = [
        {r["step"]: r for r in read_jsonl(d / "run" / "metrics.jsonl")} for d in (plain, with_gc)
    ]
    for key in ("train/reward", "policy/kl", "policy/clipfrac"):  # the same samples, same maths
        assert rows[0][2][key] == pytest.approx(rows[1][2][key], rel=1e-4, abs=1e-7), key
    assert_close(policy_params(with_gc / "run", 2), policy_params(plain / "run", 2), 1e-5)


def test_tracked_kl_is_logged_and_changes_nothing_else(tmp_path):
    """algo.track_kl with kl_coef 0 (the study's ablation): the run keeps a reference only
    to log policy/kl, and trains exactly as the same run without it."""
    common = ("steps=3", "algo.kl_coef=0", "optim.lr=1e-2", "reset.every=0")
    _, plain = _train(tmp_path / "plain", *common)
    _, tracked = _train(tmp_path / "tracked", *common, "algo.track_kl=true")
    p_steps = [r for r in plain if "train/reward" in r]
    t_steps = [r for r in tracked if "train/reward" in r]
    assert all("policy/kl" not in r for r in p_steps)
    assert t_steps[0]["policy/kl"] == pytest.approx(0.0, abs=1e-6)  # the reference = start
    assert t_steps[-1]["policy/kl"] > 1e-5  # the policy moved and the KL measured it
    for p, t in zip(p_steps, t_steps, strict=True):
        for key in ("train/reward", "loss/pg", "policy/entropy", "optim/grad_norm"):
            assert t[key] == p[key], (t["step"], key)
