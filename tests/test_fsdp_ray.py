"""FSDP2 learners on a local Ray cluster (``-m ray``; skipped without the ``ray`` extra).

Two rollout actors and two gloo learner ranks with ``scale.learner_strategy=fsdp2`` (policy,
reference and AdamW sharded) train the tiny model and are compared with one process: the
same sampled ids and rewards, the same parameters up to float rounding. Their checkpoint is
in single-process form and resumes under one process, DDP and FSDP2 alike. A reference
reset gives exactly zero KL on the next step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from prorl.config import Config, load_config, load_run_config
from prorl.runtime import RunScorer, run_training
from prorl.sampling.hf import HFSampler

ray = pytest.importorskip("ray")

from prorl.scale.workers import RaySampler  # noqa: E402  (needs ray)

pytestmark = pytest.mark.ray

ROLLOUT_TEMPERATURE = 1.0
# Two ranks sum their gradients in another order than one process (and reduce-scatter
# them); AdamW's first steps move each weight by about lr = 1e-4 whatever the gradient's
# size, so rounding shows up in the weights well below that.
ATOL = 1e-5
FSDP2 = ("scale.backend=ray", "scale.rollout_workers=2", "scale.learner_procs=2",
         "scale.learner_strategy=fsdp2")  # fmt: skip


def _config(run_dir: Path, *overrides: str) -> Config:
    return load_config(
        "debug",
        [f"run_dir={run_dir}", "steps=2", "checkpoint.every=1", "checkpoint.keep_last=5",
         "data.val_problems=1", "verify.workers=1", "scale.verifier_workers=1",
         "scale.cpus_per_worker=1", *overrides],
    )  # fmt: skip


@contextlib.contextmanager
def _recording(sampler_cls: type) -> Iterator[dict[str, list[Any]]]:
    """Record the training rollouts' token ids (not validation's) and the rewards."""
    rec: dict[str, list[Any]] = {"ids": [], "rewards": []}
    generate, score = sampler_cls.generate, RunScorer.__call__

    def gen(self: Any, prompts: Any, n: int, params: Any, seed: Any) -> Any:
        out = generate(self, prompts, n, params, seed)
        if params.temperature == ROLLOUT_TEMPERATURE:
            rec["ids"].append([[list(s.token_ids) for s in g] for g in out])
        return out

    def scorer(self: Any, examples: Any, samples: Any) -> Any:
        out = score(self, examples, samples)
        rec["rewards"].append([[s.reward for s in g] for g in out])
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampler_cls, "generate", gen)
        mp.setattr(RunScorer, "__call__", scorer)
        yield rec


def _ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}"


def _params(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(_ckpt(run_dir, step) / "policy" / "model.safetensors"))


def _assert_close(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=ATOL, msg=k)


def _rows(run_dir: Path, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # as prorl.scale does
    ray.init(num_cpus=6, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def test_fsdp2_matches_one_process_and_its_checkpoint_resumes_under_any_strategy(
    cluster: None, tmp_path: Path
) -> None:
    single_dir, run_dir = tmp_path / "single", tmp_path / "fsdp2"
    with _recording(HFSampler) as ref:
        run_training(_config(single_dir), live=False)
    with _recording(RaySampler) as rec:
        run_training(_config(run_dir, *FSDP2), live=False)
    assert rec["ids"] and rec["ids"] == ref["ids"] and rec["rewards"] == ref["rewards"]
    _assert_close(_params(run_dir, 2), _params(single_dir, 2))
    moved = _params(run_dir, 2)["model.norm.weight"] - _params(run_dir, 1)["model.norm.weight"]
    assert moved.abs().max() > 10 * ATOL  # the compared update was a real one
    # the checkpoint is in one process's form: the reference and AdamW's numbered state
    mine = torch.load(_ckpt(run_dir, 2) / "reference.pt", weights_only=True)
    _assert_close(mine, torch.load(_ckpt(single_dir, 2) / "reference.pt", weights_only=True))
    a = torch.load(_ckpt(run_dir, 2) / "trainer.pt", weights_only=True)["optimizer"]
    b = torch.load(_ckpt(single_dir, 2) / "trainer.pt", weights_only=True)["optimizer"]
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for i in b["state"]:  # moments up to ~0.015 and ~2e-5; measured differences 5e-8, 2e-10
        torch.testing.assert_close(a["state"][i]["exp_avg"], b["state"][i]["exp_avg"],
                                   rtol=0, atol=1e-6)  # fmt: skip
        torch.testing.assert_close(a["state"][i]["exp_avg_sq"], b["state"][i]["exp_avg_sq"],
                                   rtol=0, atol=1e-9)  # fmt: skip
        assert a["state"][i]["step"] == b["state"][i]["step"]

    # Step 3 from the FSDP2 checkpoint: one process, two DDP learners, two FSDP2 learners
    # (loading the whole state into shards) all continue from the same weights.
    outcomes = []
    for name, overrides in [
        ("one", ["scale.backend=local", "scale.learner_procs=1"]),
        ("ddp", ["scale.learner_strategy=ddp", "scale.rollout_workers=1"]),
        ("fsdp2", []),
    ]:
        copy = tmp_path / f"resume-{name}"
        shutil.copytree(run_dir, copy)
        cfg = load_run_config(copy, [f"run_dir={copy}", "steps=3", *overrides])
        with _recording(HFSampler if name == "one" else RaySampler) as got:
            run_training(cfg, live=False)
        outcomes.append((got, _params(copy, 3)))
        assert [e["step"] for e in _rows(copy, "events.jsonl") if e["event"] == "resume"] == [2]
    (one, p_one), (ddp, p_ddp), (fsdp, p_fsdp) = outcomes
    assert one["ids"] and one["ids"] == ddp["ids"] == fsdp["ids"]
    assert one["rewards"] == ddp["rewards"] == fsdp["rewards"]
    _assert_close(p_ddp, p_one)
    _assert_close(p_fsdp, p_one)


def test_fsdp2_reset_gives_zero_kl_on_the_next_step(cluster: None, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # one mini-batch per step: the step's KL is measured before its update
    cfg = _config(run_dir, *FSDP2, "steps=3", "reset.every=2", "algo.mini_batches=1",
                  "algo.kl_coef=0.01", "scale.rollout_workers=1")  # fmt: skip
    run_training(cfg, live=False)
    kl = {r["step"]: r["policy/kl"] for r in _rows(run_dir) if "policy/kl" in r}
    resets = [e for e in _rows(run_dir, "events.jsonl") if e["event"] == "reset"]
    assert [e["step"] for e in resets] == [2] and resets[0]["reset_optimizer"] is True
    assert kl[2] > 0  # the policy had moved away from the reference
    assert kl[3] == 0.0  # reference <- policy: every rank's shards copied exactly


def test_fsdp2_reset_to_a_kept_checkpoint_loads_it_into_the_sharded_reference(
    cluster: None, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # At step 3 the reference becomes the checkpoint of the step with the best tracked
    # score, read by every rank into its shards. The score is the entropy, which RL lowers
    # from step to step here: the best is step 1 or 2, whose checkpoints are kept (the
    # validation reward rises, so its best would be step 3, not saved yet: the policy).
    cfg = _config(run_dir, *FSDP2, "steps=4", "reset.every=3", "reset.target=best",
                  "reset.eval_metric=policy/entropy", "scale.rollout_workers=1")  # fmt: skip
    run_training(cfg, live=False)
    resets = [e for e in _rows(run_dir, "events.jsonl") if e["event"] == "reset"]
    assert [e["step"] for e in resets] == [3]
    label = resets[0]["reference"]
    assert label.startswith("checkpoint step_"), label  # not the fallback to the policy
    best = _params(run_dir, int(label.rsplit("_", 1)[1]))
    # the reference does not train: step 4's checkpoint gathers exactly what was loaded
    saved = torch.load(_ckpt(run_dir, 4) / "reference.pt", weights_only=True)
    for k, v in best.items():
        assert torch.equal(saved[k], v), k
    assert not torch.equal(best["model.norm.weight"], _params(run_dir, 4)["model.norm.weight"])
