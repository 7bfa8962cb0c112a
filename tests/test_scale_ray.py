"""Real runs on a local Ray cluster (``-m ray``; skipped without the ``ray`` extra).

Two rollout actors and a two-process gloo learner train the tiny model and are compared with
the single-process run of the same config: the same sampled token ids and rewards in every
step and the same parameters up to float rounding. A rollout actor killed while it holds a
step's prompts is replaced and the step completes with the same samples; a distributed run
resumes from its checkpoint with a different number of workers and continues exactly.
Kept to three Ray runs: each costs tens of seconds of actor start-up on two cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from prorl.config import Config, load_run_config
from prorl.metrics import read_jsonl
from prorl.runtime import run_training
from prorl.sampling.hf import HFSampler
from ray_runs import (
    ROLLOUT_TEMPERATURE,
    assert_close,
    policy_params,
    ray_config,
    recording,
)

ray = pytest.importorskip("ray")

from prorl.scale.workers import RaySampler  # noqa: E402  (needs ray)

pytestmark = pytest.mark.ray
ATOL = 1e-5  # two learners' float rounding against one process's


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Any]]]:
    """The single-process run, three steps, checkpoints after each."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    with recording(HFSampler) as rec:
        run_training(ray_config(run_dir, "steps=3"), live=False)
    assert len(rec["ids"]) >= 3 and any(any(r) for rs in rec["rewards"] for r in rs)
    return run_dir, rec


def test_two_rollout_workers_and_two_learners_match_one_process_then_resume(
    cluster: None, reference: tuple[Path, dict[str, list[Any]]], tmp_path: Path
) -> None:
    ref_dir, ref = reference
    run_dir = tmp_path / "run"
    cfg = ray_config(
        run_dir, "scale.backend=ray", "scale.rollout_workers=2", "scale.learner_procs=2"
    )
    with recording(RaySampler) as rec:
        run_training(cfg, live=False)
    calls = len(rec["ids"])
    assert rec["ids"] == ref["ids"][:calls] and rec["rewards"] == ref["rewards"][:calls]
    assert_close(policy_params(run_dir, 2), policy_params(ref_dir, 2), ATOL)
    moved = (
        policy_params(run_dir, 2)["model.norm.weight"]
        - policy_params(ref_dir, 1)["model.norm.weight"]
    )
    assert moved.abs().max() > 1e-5  # the compared update was a real one

    # Resume the distributed run from its step-2 checkpoint with one rollout worker and two
    # verifier workers; a single process resumes a copy of it. Both continue from the same
    # weights, so step 3 draws the same samples. (Against the uninterrupted single-process
    # run, step 3 may differ by a token: the two learners' weights differ from one process's
    # by float rounding, ~1e-7, and a sampled token near a CDF boundary can flip.)
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    cfg = load_run_config(
        run_dir, ["steps=3", "scale.rollout_workers=1", "scale.verifier_workers=2"]
    )
    with recording(RaySampler) as rec2:
        run_training(cfg, live=False)
    single = load_run_config(
        copy, [f"run_dir={copy}", "steps=3", "scale.backend=local", "scale.learner_procs=1"]
    )
    with recording(HFSampler) as rec3:
        run_training(single, live=False)
    assert rec2["ids"] and rec2["ids"] == rec3["ids"] and rec2["rewards"] == rec3["rewards"]
    assert_close(policy_params(run_dir, 3), policy_params(copy, 3), ATOL)
    events = read_jsonl(run_dir / "events.jsonl")
    assert [e["step"] for e in events if e["event"] == "resume"] == [2]


def test_rollout_worker_killed_mid_step_is_replaced_and_step_completes(
    cluster: None, reference: tuple[Path, dict[str, list[Any]]], tmp_path: Path
) -> None:
    _, ref = reference
    run_dir = tmp_path / "run"
    cfg = ray_config(run_dir, "steps=1", "scale.backend=ray", "scale.rollout_workers=2")
    killed: list[Any] = []
    generate = RaySampler.generate

    def generate_and_kill(self: RaySampler, prompts: Any, n: int, params: Any, seed: Any) -> Any:
        if params.temperature != ROLLOUT_TEMPERATURE or killed:
            return generate(self, prompts, n, params, seed)
        run = self.actor_pool.run

        def run_and_kill(shares: Any, call: Any, prepare: Any = None) -> Any:
            def call_then_kill(actor: Any, share: Any) -> Any:
                ref = call(actor, share)
                if not killed:  # the first worker dies holding its share of the prompts
                    killed.append(actor)
                    ray.kill(actor)
                return ref

            return run(shares, call_then_kill, prepare)

        self.actor_pool.run = run_and_kill  # type: ignore[method-assign]
        try:
            return generate(self, prompts, n, params, seed)
        finally:
            del self.actor_pool.run

    with pytest.MonkeyPatch.context() as mp, recording(RaySampler) as rec:
        mp.setattr(RaySampler, "generate", generate_and_kill)
        run_training(cfg, live=False)
    assert killed
    events = read_jsonl(run_dir / "events.jsonl")
    replaced = [e for e in events if e["event"] == "worker_replaced"]
    assert len(replaced) == 1
    assert replaced[0]["worker"] == "rollout" and replaced[0]["step"] == 1
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics if "train/reward" in m] == [1]
    # the redone share drew the same samples: step 1 equals the undisturbed run's
    assert rec["ids"] == ref["ids"][: len(rec["ids"])]
    assert rec["rewards"] == ref["rewards"][: len(rec["rewards"])]


def test_learner_rank_death_stops_with_a_checkpoint_then_resumes(
    cluster: None, tmp_path: Path
) -> None:
    import prorl.train
    from prorl.scale import LearnerFailed, Scale

    run_dir = tmp_path / "run"
    cfg = ray_config(
        run_dir, "steps=3", "scale.backend=ray", "scale.learner_procs=2", "scale.rollout_workers=1"
    )
    scales: list[Scale] = []
    start, step = Scale.start.__func__, prorl.train.rl_step  # type: ignore[attr-defined]

    def record_start(cls: type, cfg: Config) -> Scale:
        scales.append(start(cls, cfg))
        return scales[-1]

    def step_or_kill(state: Any) -> Any:
        if state.step == 2:  # learner rank 1 dies before step 3
            ray.kill(scales[0].followers[0])
        return step(state)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Scale, "start", classmethod(record_start))
        mp.setattr(prorl.train, "rl_step", step_or_kill)
        with pytest.raises(LearnerFailed, match="resume"):
            run_training(cfg, live=False)
    events = read_jsonl(run_dir / "events.jsonl")
    failed = [e for e in events if e["event"] == "learner_failed"]
    assert len(failed) == 1 and failed[0]["step"] == 3
    assert failed[0]["checkpoint"].endswith("step_00000002")
    # resume with one learner process: the run finishes
    run_training(load_run_config(run_dir, ["scale.learner_procs=1"]), live=False)
    assert (run_dir / "checkpoints" / "step_00000003" / "COMPLETE").exists()


def test_async_rollouts_on_ray_actors_match_one_process(cluster: None, tmp_path: Path) -> None:
    """``rollout.max_staleness=1`` with the Ray rollout actors drawing ahead: the same
    samples as one process's rollout thread, step for step. Validation after every step
    lends the actors the current policy and hands their snapshot back: a snapshot not given
    back would change the next rollouts."""
    lag = ["steps=3", "rollout.max_staleness=1", "algo.truncated_is=true", "eval.every=1"]
    with recording(HFSampler) as one:
        run_training(ray_config(tmp_path / "one", *lag), live=False)
    run_dir = tmp_path / "ray"
    with recording(RaySampler) as rec:
        run_training(
            ray_config(run_dir, *lag, "scale.backend=ray", "scale.rollout_workers=2"), live=False
        )
    assert len(rec["ids"]) >= 3
    assert rec["ids"] == one["ids"] and rec["rewards"] == one["rewards"]
    drawn = read_jsonl(run_dir / "samples.jsonl")
    assert [d["policy_version"] for d in drawn] == [0, 0, 1]
