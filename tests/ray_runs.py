"""What the Ray test modules share (test_scale_ray.py, test_fsdp_ray.py): the small debug
config they train, a recorder of the training rollouts and rewards, and checkpoint readers
(their local cluster is the ``cluster`` fixture in conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from prorl.config import Config, load_config
from prorl.runtime import RunScorer

ROLLOUT_TEMPERATURE = 1.0


def ray_config(run_dir: Path, *overrides: str) -> Config:
    return load_config(
        "debug",
        [
            f"run_dir={run_dir}",
            "steps=2",
            "checkpoint.every=1",
            "checkpoint.keep_last=5",
            "data.val_problems=1",
            "verify.workers=1",
            "scale.verifier_workers=1",
            "scale.cpus_per_worker=1",
            *overrides,
        ],
    )


@contextlib.contextmanager
def recording(sampler_cls: type) -> Iterator[dict[str, list[Any]]]:
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


def ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}"


def policy_params(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt(run_dir, step) / "policy" / "model.safetensors"))


def assert_close(a: dict[str, Any], b: dict[str, Any], atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)
