"""A small one-process checkpoint for the learner-group loading tests (test_fsdp.py,
test_ddp_load.py), and the stand-in for a task mixture they restore into."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prorl.config import load_config, to_dict
from prorl.models import load_policy


def write_checkpoint(run_dir: Path) -> Path:
    """A one-process checkpoint after two AdamW steps: policy, a different reference,
    optimizer and scheduler state, RNG states, reset history, the run's config."""
    from prorl import checkpoint as ckpt
    from prorl.models import tiny_model
    from prorl.state import make_optimizer

    cfg = load_config("debug", ["optim.warmup_steps=3"])
    model, tok = load_policy("tiny")
    ref = tiny_model(tok, seed=1)
    opt, sched = make_optimizer(cfg, model)
    ids = torch.arange(1, 31).reshape(5, 6) * 7
    for _ in range(2):
        model(ids, labels=ids).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    torch.manual_seed(1234)  # the saved RNG state differs from the ranks' own
    trainer = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "mixture": {"cursor": 7},
        "rng": ckpt.rng_state(),
        "resets": [1],
        "resetter": {},
        "health": {},
    }
    return ckpt.save_checkpoint(run_dir, 2, model, tok, ref, trainer, to_dict(cfg))


def loading_state(policy: Any, ref: Any, cfg: Any) -> Any:
    """A TrainState's loading surface (what ``restore_state`` reads and replaces) over
    ``policy`` and ``ref``, with a fresh AdamW of ``cfg``."""
    from types import SimpleNamespace

    from prorl.state import make_optimizer

    opt, sched = make_optimizer(cfg, policy)
    return SimpleNamespace(
        cfg=cfg,
        stage=SimpleNamespace(cfg=cfg),
        policy=policy,
        ref=ref,
        optimizer=opt,
        scheduler=sched,
        producer=None,  # no steps drawn ahead
        mixture=Mixture(),
        resets=[],
        resetter=None,
        health=None,
        step=0,
    )


class Mixture:
    """Records the state a restore hands to the task mixture."""

    def __init__(self) -> None:
        self.loaded: Any = None

    def load_state_dict(self, state: Any) -> None:
        self.loaded = state
