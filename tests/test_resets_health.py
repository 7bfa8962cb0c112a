"""Health checks: alarms on synthetic traces, and warn/reset/stop in the training loop."""

import pytest

from prorl import checkpoint as ckpt
from prorl.config import DEFAULT_HEALTH, HealthCheck, load_config
from prorl.health import HealthMonitor
from prorl.metrics import read_jsonl
from prorl.runtime import run_training
from prorl.train import TrainingStopped

HEALTHY = {
    "policy/entropy": 1.2,
    "policy/kl": 0.01,
    "policy/clipfrac": 0.02,
    "filter/kept_frac": 0.6,
    "response/truncated_frac": 0.05,
    "optim/grad_norm": 0.8,
    "verify/timeouts": 0.0,
    "verify/infra_errors": 0.0,
    "response/length_mean": 300.0,
}


def test_defaults_quiet_on_healthy_metrics():
    mon = HealthMonitor(DEFAULT_HEALTH)
    assert all(mon.observe(HEALTHY) == [] for _ in range(20))


@pytest.mark.parametrize(
    ("metric", "bad", "steps_needed"),
    [
        ("policy/entropy", 0.01, 3),
        ("policy/kl", 2.0, 3),
        ("policy/clipfrac", 0.5, 3),
        ("filter/kept_frac", 0.0, 5),
        ("response/truncated_frac", 0.9, 3),
        ("optim/grad_norm", 5e3, 1),
        ("verify/timeouts", 9.0, 1),
        ("verify/infra_errors", 1.0, 1),
    ],
)
def test_each_default_check_fires_after_its_patience(metric, bad, steps_needed):
    mon = HealthMonitor(DEFAULT_HEALTH)
    fired = [mon.observe({**HEALTHY, metric: bad}) for _ in range(steps_needed)]
    assert all(f == [] for f in fired[:-1])
    assert [(a.metric, a.action, a.steps) for a in fired[-1]] == [(metric, "warn", steps_needed)]


def test_count_resets_when_healthy_and_waits_when_missing():
    mon = HealthMonitor([HealthCheck("response/length_mean", max=1000, patience=2)])
    assert mon.observe({"response/length_mean": 1500}) == []
    assert mon.observe({"other": 1}) == []  # not reported: the count stays at 1
    (alarm,) = mon.observe({"response/length_mean": 2000})
    assert alarm.message == "response/length_mean = 2000 > 1000 for 2 steps"
    assert mon.observe({"response/length_mean": 10}) == []
    assert mon.observe({"response/length_mean": 2000}) == []  # counting anew
    other = HealthMonitor([HealthCheck("response/length_mean", max=1000, patience=2)])
    other.load_state_dict(mon.state_dict())
    assert len(other.observe({"response/length_mean": 2000})) == 1


def _toy(tmp_path, *extra):
    from test_checkpoint import TOY

    over = [*TOY, "steps=3", "eval.every=0", "reset.every=0", f"run_dir={tmp_path / 'run'}"]
    return load_config(None, [*over, *extra])


def test_stop_action_checkpoints_and_stops(tmp_path):
    cfg = _toy(tmp_path, "health.checks=[{metric: policy/entropy, min: 100, action: stop}]")
    with pytest.raises(TrainingStopped) as info:
        run_training(cfg, live=False)
    assert info.value.step == 1
    run = tmp_path / "run"
    assert ckpt.load_trainer(ckpt.checkpoint_dirs(run)[-1])["step"] == 1
    (alarm,) = [e for e in read_jsonl(run / "events.jsonl") if e["event"] == "alarm"]
    assert alarm["metric"] == "policy/entropy" and alarm["action"] == "stop"
    assert alarm["value"] < 100 and alarm["bound"] == "< 100"


def test_reset_action_resets_reference(tmp_path):
    cfg = _toy(tmp_path, "health.checks=[{metric: policy/kl, max: 1e-9, action: reset}]")
    run_training(cfg, live=False)
    rows = {r["step"]: r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")}
    resets = [e for e in read_jsonl(tmp_path / "run" / "events.jsonl") if e["event"] == "reset"]
    assert [e["step"] for e in resets] == [2]  # step 1 has KL 0; step 3 is the last
    assert resets[0]["reason"].startswith("health: policy/kl = ")
    assert rows[3]["policy/kl"] == 0.0  # the reference was reset to the policy
