"""Asynchronous rollouts (``rollout.max_staleness``): the producer's job order and fixed lag
on hand-made jobs, then real training runs on the tiny model: versions recorded and the
bound held, the same data as the synchronous loop when the policy cannot move, resets that
keep or redraw, and an exact resume after a real SIGKILL."""

from __future__ import annotations

import threading

import pytest
import torch

from prorl import checkpoint as ckpt
from prorl.collect import StepRollouts
from prorl.config import ConfigError, load_config
from prorl.metrics import read_jsonl
from prorl.producer import ProducerFailed, RolloutProducer
from prorl.runtime import run_training
from test_checkpoint import TIMING, TOY, _cli, kill_after_checkpoint

ASYNC = ["algo.truncated_is=true", "rollout.max_staleness=1"]


# --- the producer on hand-made jobs ----------------------------------------------------------


class Cursor:
    """A stand-in for the task mixture: a cursor that each collected step advances."""

    def __init__(self) -> None:
        self.cursor = {"t": 0}

    def load_state_dict(self, state):
        self.cursor = dict(state["cursor"])


def fake_producer(lag, end=100, fail_at=None):
    mix = Cursor()
    log: list[tuple] = []
    held: dict[str, int] = {}

    def collect(step, version):
        if step == fail_at:
            raise ValueError("verifier exploded")
        log.append(("collect", step, version, held["v"]))
        before = dict(mix.cursor)
        mix.cursor["t"] += 10
        return StepRollouts(step, version, [], [f"u{before['t']}"], {}, 0, before)

    def load(weights):
        held["v"] = weights["v"]
        log.append(("weights", weights["v"]))

    return RolloutProducer(collect, load, lag, mix, end), log, mix


def test_fixed_lag_draws_step_t_from_the_policy_of_t_minus_lag():
    p, log, _ = fake_producer(lag=2)
    p.start(0, {"v": 0}, [])
    versions = {}
    for t in range(6):
        r = p.take(t)
        versions[t] = r.version
        p.publish(t + 1, {"v": t + 1})
    p.close()
    assert versions == {0: 0, 1: 0, 2: 0, 3: 1, 4: 2, 5: 3}
    # every step was drawn by the weights it names, and each step exactly once, in order
    collected = [e for e in log if e[0] == "collect"]
    assert [e[1] for e in collected] == list(range(len(collected)))
    assert all(e[2] == e[3] for e in collected)


def test_unchanged_weights_are_not_reloaded_and_nothing_is_drawn_past_the_end():
    p, log, _ = fake_producer(lag=1, end=3)
    p.start(0, {"v": 0}, [])
    for t in range(3):
        p.take(t)
        p.publish(t + 1, None if t == 0 else {"v": t + 1})
    assert p.drain() == []
    p.close()
    assert [e for e in log if e[0] == "weights"] == [("weights", 0), ("weights", 2), ("weights", 3)]
    assert [e[1] for e in log if e[0] == "collect"] == [0, 1, 2]


def test_restored_steps_are_used_as_they_are():
    p, log, _ = fake_producer(lag=1)
    saved = [StepRollouts(5, 4, [], ["a"], {"m": 1.0}, 7, {"t": 0})]
    p.start(5, {"v": 5}, saved)
    assert p.take(5) is saved[0]
    assert p.take(6).version == 5  # the first step drawn after the resume
    p.close()
    assert [e[1] for e in log if e[0] == "collect"] == [6]


def test_redraw_rewinds_the_mixture_and_draws_again_from_the_newest_policy():
    p, log, mix = fake_producer(lag=2)
    p.start(0, {"v": 0}, [])
    p.take(0)
    p.publish(1, {"v": 1})  # queued now: steps 1, 2 (policy 0) and 3 (policy 1)
    done = p.drain()
    assert [(r.step, r.version) for r in done] == [(1, 0), (2, 0), (3, 1)]
    assert mix.cursor == {"t": 40}
    assert p.redraw() == 3  # one prompt group per fake step, drawn again
    again = p.drain()
    assert [(r.step, r.version) for r in again] == [(1, 1), (2, 1), (3, 1)]
    assert [r.sampled for r in again] == [r.sampled for r in done]  # the same prompts
    assert mix.cursor == {"t": 40}
    p.close()


def test_a_failing_job_stops_the_trainer_with_its_error():
    p, _, _ = fake_producer(lag=1, fail_at=1)
    p.start(0, {"v": 0}, [])
    p.take(0)
    with pytest.raises(ProducerFailed, match="verifier exploded"):
        p.take(1)
    p.close()


def test_exclusive_holds_the_thread_between_jobs():
    gate = threading.Event()
    started = threading.Event()

    def collect(step, version):
        started.set()
        gate.wait(10)
        return StepRollouts(step, version, [], [], {}, 0, {})

    loads = []
    p = RolloutProducer(collect, loads.append, 1, Cursor(), 100)
    p.start(0, {"v": 0}, [])
    started.wait(10)
    entered = threading.Event()

    def hold():
        with p.exclusive():
            entered.set()

    t = threading.Thread(target=hold)
    t.start()
    assert not entered.wait(0.3)  # a job is running: validation waits for it
    gate.set()
    t.join(10)
    assert entered.is_set()
    assert loads[-1] == {"v": 0}  # the sampler got the thread's weights back
    p.close()


# --- configuration ---------------------------------------------------------------------------


def test_async_without_a_correction_is_refused():
    with pytest.raises(ConfigError, match="algo.truncated_is=true"):
        load_config(None, ["rollout.max_staleness=1"])
    load_config(None, ["rollout.max_staleness=1", "algo.old_logprobs=sampler"])  # accepted


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (["algo.old_logprobs=engine"], "algo.old_logprobs: trainer|sampler"),
        (["algo.is_low=2"], "algo.is_low: need 0 <= is_low <= 1 <= is_high"),
        (["algo.is_high=0.5"], "algo.is_low: need 0 <= is_low <= 1 <= is_high"),
        (["algo.truncated_is=true", "algo.old_logprobs=sampler"], "algo.truncated_is: needs"),
    ],
)
def test_importance_sampling_settings_are_checked(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, override)


def test_async_with_vllm_sleep_is_refused():
    with pytest.raises(ConfigError, match="rollout.vllm_sleep: frees the engine's memory"):
        load_config(None, [*ASYNC, "rollout.vllm_sleep=true"])


def test_async_with_several_learner_processes_is_refused():
    with pytest.raises(ConfigError, match="learner processes"):
        load_config(None, [*ASYNC, "scale.backend=ray", "scale.learner_procs=2"])


# --- real runs on the tiny model ----------------------------------------------------------------


def _train(run_dir, *overrides):
    cfg = load_config(None, [*TOY, *overrides, f"run_dir={run_dir}"])
    run_training(cfg, live=False)
    return read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "samples.jsonl")


def _training_rows(rows, drop=()):
    """Metric rows without timings (and ``drop``)."""
    return [
        {k: v for k, v in r.items() if not k.startswith((*TIMING, *drop)) and k != "time"}
        for r in rows
    ]


@pytest.mark.parametrize("lag", [1, 2])
def test_samples_carry_their_policy_version_and_the_bound_holds(tmp_path, lag):
    steps = 5
    rows, drawn = _train(
        tmp_path / "run", f"steps={steps}", "algo.truncated_is=true", f"rollout.max_staleness={lag}"
    )
    # samples.jsonl row k holds step k-1's examples and the update count of their policy
    assert [d["step"] for d in drawn] == list(range(1, steps + 1))
    versions = [d["policy_version"] for d in drawn]
    assert versions == [max(0, t - lag) for t in range(steps)]
    assert all(0 <= t - v <= lag for t, v in enumerate(versions))
    stale = [r["async/staleness"] for r in rows if "async/staleness" in r]
    assert stale == [float(t - v) for t, v in enumerate(versions)]
    spread = [r["rollout/is_ratio_max"] for r in rows if "rollout/is_ratio_max" in r]
    assert len(spread) == steps and all(x > 0 for x in spread)


def test_with_a_frozen_policy_async_draws_what_the_synchronous_loop_draws(tmp_path):
    # lr 1e-30 moves no fp32 weight, so every policy version is the same model: the
    # rollout thread must then produce the synchronous loop's batches, step for step
    frozen = ["steps=4", "optim.lr=1e-30", "algo.truncated_is=true", "reset.every=0"]
    sync_rows, sync_drawn = _train(tmp_path / "sync", *frozen)
    async_rows, async_drawn = _train(tmp_path / "async", *frozen, "rollout.max_staleness=1")
    assert [d["uids"] for d in sync_drawn] == [d["uids"] for d in async_drawn]
    a = _training_rows(async_rows, drop=("async/",))
    assert _training_rows(sync_rows) == a
    assert any(r.get("train/reward", 0) > 0 for r in a)  # something was scored


def test_a_reset_keeps_or_redraws_the_steps_drawn_ahead(tmp_path):
    common = ["steps=5", "reset.every=2", "rollout.max_rounds=1", *ASYNC]
    _, kept = _train(tmp_path / "keep", *common)
    rows, redrawn = _train(tmp_path / "redraw", *common, "rollout.on_reset=redraw")
    # keep: the fixed lag throughout
    assert [d["policy_version"] for d in kept] == [0, 0, 1, 2, 3]
    # redraw: resets after steps 2 and 4 (rows 2, 4): the next step comes from the policy
    # after the reset, with the same prompts
    assert [d["policy_version"] for d in redrawn] == [0, 0, 2, 2, 4]
    assert [d["uids"] for d in kept] == [d["uids"] for d in redrawn]
    counted = [r["async/redrawn_groups"] for r in rows if "async/redrawn_groups" in r]
    assert counted[-1] > 0 and counted == sorted(counted)


def test_exact_resume_after_sigkill_with_steps_drawn_ahead(tmp_path):
    steps = 6
    overrides = [*ASYNC, f"steps={steps}"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_training(load_config(None, [*TOY, *overrides, f"run_dir={straight}"]), live=False)
    # the checkpoint carries the steps drawn ahead (lag + 1 of them) and their lag
    saved = ckpt.load_trainer(ckpt.checkpoint_dirs(straight)[-2])
    assert saved["inflight_lag"] == 1 and len(saved["inflight"]) == 1  # the run ends at 6

    kill_after_checkpoint(killed, [*TOY, *overrides], steps // 2, steps)
    mid = ckpt.load_trainer(killed / "checkpoints" / ckpt.step_name(steps // 2))
    assert [d["step"] for d in mid["inflight"]] == [3, 4]

    res = _cli("train", "--resume", str(killed))
    assert res.returncode == 0, res.stderr[-3000:]
    rows1 = _training_rows(read_jsonl(straight / "metrics.jsonl"))
    rows2 = _training_rows(read_jsonl(killed / "metrics.jsonl"))
    assert [r["step"] for r in rows1] == list(range(steps + 1))
    assert rows1 == rows2
    assert read_jsonl(straight / "samples.jsonl") == read_jsonl(killed / "samples.jsonl")
    p1 = torch.load(ckpt.checkpoint_dirs(straight)[-1] / "reference.pt", weights_only=True)
    p2 = torch.load(ckpt.checkpoint_dirs(killed)[-1] / "reference.pt", weights_only=True)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)


def test_steps_drawn_ahead_follow_their_own_stage(tmp_path):
    # stage 2 halves the response cap; its first step is drawn while stage 1 still trains
    stages = "stages=[{steps: 2}, {steps: 2, rollout: {max_new_tokens: 2}}]"
    rows, drawn = _train(tmp_path / "run", stages, *ASYNC, "eval.every=0")
    trained = [r for r in rows if "response/length_max" in r]
    assert [r["response/length_max"] for r in trained] == [4.0, 4.0, 2.0, 2.0]
    assert [d["policy_version"] for d in drawn] == [0, 0, 1, 2]


def test_resume_with_another_lag_draws_the_carried_steps_again(tmp_path):
    # a checkpoint's steps drawn ahead were drawn with lag 1; resumed synchronously they are
    # drawn again, from the resumed policy, with the same prompts (the mixture rewinds)
    one_round = ["steps=4", "rollout.max_rounds=1"]  # refills would follow the new rewards
    overrides = [*TOY, *ASYNC, *one_round]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _, ahead = _train(straight, *ASYNC, *one_round)
    kill_after_checkpoint(killed, overrides, 2, 4)
    res = _cli("train", "--resume", str(killed), "rollout.max_staleness=0")
    assert res.returncode == 0, res.stderr[-3000:]
    drawn = read_jsonl(killed / "samples.jsonl")
    assert [d["uids"] for d in drawn] == [d["uids"] for d in ahead]
    assert [d["policy_version"] for d in drawn] == [0, 0, 2, 3]
