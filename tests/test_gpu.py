"""The learner on a GPU (``model.device``, prorl.device): run with ``-m gpu`` on a machine
with CUDA (``.venv/bin/python -m pytest -m gpu``). The CPU variants run in the default suite,
so the tests' own logic is checked on every machine; the CUDA ones have not yet run on a GPU
(docs/scaling.md says what was tested where)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from prorl.config import load_config
from prorl.metrics import read_jsonl
from prorl.policy import pack, policy_device, response_logprobs
from prorl.runtime import run_training
from test_train import TOY

CUDA = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if CUDA else 0
gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]
DEVICES = ["cpu", pytest.param("cuda", marks=gpu)]


def _train(run_dir, *overrides):
    cfg = load_config(None, [*TOY, f"run_dir={run_dir}", *overrides])
    return run_training(cfg, live=False)


@pytest.mark.parametrize("device", DEVICES)
def test_training_runs_on_the_device_and_resumes_anywhere(tmp_path, monkeypatch, device):
    """Three steps with KL and a reset on ``device``: the update's policy, reference and
    AdamW state are there; its checkpoint resumes on the CPU (map_location) for a fourth."""
    import prorl.train as train

    seen: list[tuple[str, str, str]] = []
    update = train.update_policy

    def spy(state, batch):
        out = update(state, batch)
        seen.append(
            (
                policy_device(state.policy).type,
                policy_device(state.ref).type,
                str(next(iter(state.optimizer.state.values()))["exp_avg"].device.type),
            )
        )
        return out

    monkeypatch.setattr(train, "update_policy", spy)
    run = tmp_path / "run"
    common = ("optim.lr=3e-3", "algo.kl_coef=1e-3", "reset.every=2", "checkpoint.every=1")
    _train(run, "steps=3", f"model.device={device}", *common)
    assert seen == [(device, device, device)] * 3
    rows = {r["step"]: r for r in read_jsonl(run / "metrics.jsonl")}
    assert rows[2]["reset"] == 1.0 and rows[2]["policy/kl"] > 0
    # step 3 starts right after the reset: reference == policy, so its KL starts at 0
    assert rows[3]["policy/kl"] < rows[2]["policy/kl"]

    seen.clear()
    _train(run, "steps=4", "model.device=cpu", *common)  # resume the same run on the CPU
    rows = {r["step"]: r for r in read_jsonl(run / "metrics.jsonl")}
    assert sorted(k for k, r in rows.items() if "train/reward" in r) == [1, 2, 3, 4]
    assert seen == [("cpu", "cpu", "cpu")]
    assert all(torch.isfinite(torch.tensor(r["loss/pg"])) for r in rows.values() if "loss/pg" in r)


@pytest.mark.parametrize("device", DEVICES)
def test_async_rollouts_on_the_device(tmp_path, device):
    """``rollout.max_staleness=1`` on ``device``: the rollout thread's copy of the policy and
    the snapshots it receives live there too; steps come from the policy one update back."""
    run = tmp_path / "run"
    lag = ("rollout.max_staleness=1", "algo.truncated_is=true", "optim.lr=3e-3")
    _train(run, "steps=3", f"model.device={device}", *lag)
    assert [d["policy_version"] for d in read_jsonl(run / "samples.jsonl")] == [0, 0, 1]
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss/pg" in r]
    assert [r["async/staleness"] for r in rows] == [0.0, 1.0, 1.0]
    assert all(torch.isfinite(torch.tensor(r["rollout/is_ratio_max"])) for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("bf16", [False, True])
def test_logprobs_on_gpu_match_the_cpu(tiny, bf16):
    """The tiny model's response log-probs on cuda:0 equal the CPU's to float rounding
    (fp32), or to bf16 rounding under autocast."""
    import copy

    model, _ = tiny
    batch = pack([[1, 2, 3, 4], [5, 6]], [[7, 8, 9], [10]], pad_id=0)
    cpu_lp, _ = response_logprobs(model, batch, 1.0, bf16=False)
    gpu_model = copy.deepcopy(model).to("cuda")
    gpu_lp, ent = response_logprobs(gpu_model, batch, 1.0, bf16=bf16, with_entropy=True)
    assert gpu_lp.device.type == "cuda" and ent is not None and ent.device.type == "cuda"
    mask = batch.response_mask.bool()
    diff = (gpu_lp.cpu() - cpu_lp).abs()[mask].max().item()
    assert diff < (5e-2 if bf16 else 1e-4), diff


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 2, reason="needs 2 CUDA GPUs")
def test_torchrun_nccl_learners(tmp_path):
    """Two data-parallel ranks under torchrun, one GPU each, NCCL: the debug run completes."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "prorl.cli",
            "train",
            "--preset",
            "debug",
            "--run-dir",
            str(run),
            "model.device=cuda",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "train/reward" in r]
    assert rows[-1]["step"] == 3 and "policy/kl" in rows[-1]
