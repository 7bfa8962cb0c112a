"""vLLM rollout actors on Ray (``-m ray``, needs the ``vllm`` extra too): two actors, each
owning a vLLM engine over its own copy of SmolLM2, and two gloo learners draw the same
samples as one process with an in-process vLLM engine, also after the learners' update has
been shipped to the engines (step 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prorl.runtime import run_training
from ray_runs import assert_close, policy_params, ray_config, recording

pytest.importorskip("vllm")
pytest.importorskip("ray")

from prorl.sampling.vllm import VLLMSampler  # noqa: E402
from prorl.scale.workers import RaySampler  # noqa: E402  (needs ray)

pytestmark = pytest.mark.ray
# vLLM's CPU attention needs a head size of 32 or more: the tiny model's is 16
VLLM = [
    "model.name=smollm2-135m",
    "rollout.sampler=vllm",
    "rollout.vllm_kv_cache_gb=0.5",
    "rollout.max_new_tokens=8",
]


def test_vllm_rollout_actors_match_one_process(cluster: None, tmp_path: Path) -> None:
    one = tmp_path / "one"
    with recording(VLLMSampler) as ref:
        run_training(ray_config(one, *VLLM), live=False)
    two = tmp_path / "two"
    cfg = ray_config(
        two, *VLLM, "scale.backend=ray", "scale.rollout_workers=2", "scale.learner_procs=2"
    )
    with recording(RaySampler) as rec:
        run_training(cfg, live=False)
    assert len(rec["ids"]) == len(ref["ids"]) >= 2  # steps 1 and 2 (and validation's)
    assert rec["ids"] == ref["ids"] and rec["rewards"] == ref["rewards"]
    # the compared step-2 samples came after a real update
    moved = policy_params(two, 2)["model.norm.weight"] - policy_params(two, 1)["model.norm.weight"]
    assert moved.abs().max() > 1e-6
    assert_close(policy_params(two, 2), policy_params(one, 2), 1e-5)


def test_a_worker_that_cannot_start_stops_the_run_at_once(cluster: None, tmp_path: Path) -> None:
    """A rollout actor failing in its constructor (here: the engine refuses a KV cache too
    small for the model's context) is not replaced over and over: the run stops with the
    constructor's own error line, before anything is kept."""
    from prorl.scale import WorkerStartError

    run_dir = tmp_path / "run"
    cfg = ray_config(
        run_dir,
        *VLLM,
        "rollout.vllm_kv_cache_gb=0.01",
        "scale.backend=ray",
        "scale.rollout_workers=2",
    )
    with pytest.raises(WorkerStartError, match=r"rollout worker \d could not start: .*KV cache"):
        run_training(cfg, live=False)
    assert not run_dir.exists()
