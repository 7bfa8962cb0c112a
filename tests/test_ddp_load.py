"""In a DDP learner group only rank 0 reads checkpoint files (prorl.checkpoint,
prorl.scale.learner.on_rank0): a real two-rank gloo group where rank 1 is handed paths it
cannot read still ends with rank 0's policy, reference, AdamW and trainer state, bitwise; a
read failure on rank 0 raises on both ranks and leaves the group usable; and whether a
reset goes to a kept checkpoint is rank 0's decision, whatever rank 1 sees on its disk.
The FSDP2 variant is in test_fsdp.py; whole Ray runs that resume are in test_scale_ray.py."""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from checkpoint_fixtures import loading_state, write_checkpoint
from prorl.config import load_config
from prorl.models import load_policy


def _fresh(rank: int) -> Any:
    """A TrainState's loading surface over models whose weights differ between the ranks
    and from the checkpoint's, with another learning rate (what restore must replace)."""
    from prorl.models import tiny_model

    cfg = load_config("debug", ["optim.lr=0.5", "reset.target=best"])
    _, tok = load_policy("tiny")
    return loading_state(tiny_model(tok, seed=10 + rank), tiny_model(tok, seed=20 + rank), cfg)


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_clone(v) for v in x)
    return x


def _errors(*calls: Any) -> list[str]:
    out = []
    for call in calls:
        try:
            call()
            out.append("no error")
        except Exception as e:
            out.append(f"{type(e).__name__}: {e}")
    return out


def _rank(rank: int, init: str, run: str, out: str) -> None:
    import torch.distributed as dist

    from prorl import checkpoint as ckpt
    from prorl import state as state_mod
    from prorl.resets import ResetDecision
    from prorl.runtime import check_resume
    from prorl.scale.fsdp import load_optimizer_state
    from prorl.scale.learner import on_rank0
    from prorl.train import apply_reset

    torch.set_num_threads(1)
    # a short timeout: a rank left waiting for a peer fails the test instead of hanging it
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
    )
    run_dir = Path(run)
    real = run_dir / "checkpoints" / ckpt.step_name(2)
    # rank 1 is handed a folder that does not exist: any file it reads fails
    mine = real if rank == 0 else run_dir.parent / "not-there"
    state = _fresh(rank)
    fresh_policy = _clone(state.policy.state_dict())
    state_mod.restore_state(state, mine)
    result: dict[str, Any] = {
        "policy": _clone(state.policy.state_dict()),
        "fresh_policy": fresh_policy,
        "ref": _clone(state.ref.state_dict()),
        "adamw": _clone(state.optimizer.state_dict()),
        "scheduler": state.scheduler.state_dict(),
        "mixture": state.mixture.loaded,
        "resets": state.resets,
        "step": state.step,
        "rng": torch.get_rng_state(),
    }

    # rank 0 cannot read (or use) a checkpoint: every rank raises, none is left waiting
    gone = run_dir.parent / "gone"
    bad = _clone(result["adamw"])
    bad["param_groups"][0]["params"] = bad["param_groups"][0]["params"][:-1]
    other = load_config("debug", ["seed=99"])
    result["errors"] = _errors(
        lambda: state_mod.load_weights(state.ref, gone / "policy"),
        lambda: state_mod.restore_state(state, gone),
        lambda: load_optimizer_state(state.policy, state.optimizer, bad if rank == 0 else None),
        lambda: on_rank0(lambda: check_resume(other, real), share=True),
    )
    result["ref_after_errors"] = _clone(state.ref.state_dict())
    alive = torch.tensor([rank + 1.0])
    dist.all_reduce(alive)  # the group still works: every rank left each call together
    result["alive"] = float(alive)

    # the reset: rank 1 has no checkpoints directory at all, yet loads the kept one
    scratch = Path(tempfile.mkdtemp(prefix=f"rank{rank}-"))
    own = run_dir if rank == 0 else scratch
    kept = apply_reset(state, ResetDecision(("test",), best_step=2), own)
    result["kept"] = (kept["reference"], _clone(state.ref.state_dict()))
    # rank 1 sees a complete checkpoint of step 5 on its own disk; rank 0 has none: the
    # reference becomes the current policy on both ranks (rank 0's answer)
    if rank == 1:
        shutil.copytree(real, scratch / "checkpoints" / ckpt.step_name(5))
    state.policy.model.norm.weight.data.fill_(3.0)  # a policy unlike either checkpoint
    lost = apply_reset(state, ResetDecision(("test",), best_step=5), own)
    result["lost"] = (lost["reference"], _clone(state.ref.state_dict()))
    shutil.rmtree(scratch)
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors differ (bitwise) or that only one side has."""
    return sorted(set(a) ^ set(b)) + [k for k in a if k in b and not torch.equal(a[k], b[k])]


def test_only_rank_0_reads_checkpoints_in_a_ddp_group(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    folder = write_checkpoint(tmp_path / "run")
    fd, name = tempfile.mkstemp(dir=tmp_path)
    os.close(fd)
    out = str(tmp_path / "result")
    mp.spawn(_rank, args=(f"file://{name}", str(tmp_path / "run"), out), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=False) for r in (0, 1))

    # what one process reads from the files
    policy = AutoModelForCausalLM.from_pretrained(folder / "policy").state_dict()
    ref = torch.load(folder / "reference.pt", weights_only=True)
    saved = torch.load(folder / "trainer.pt", weights_only=True)
    for r in (r0, r1):
        assert _equal(r["policy"], policy) == []
        assert _equal(r["ref"], ref) == []
        assert _equal(r["fresh_policy"], policy) != []  # the load did replace them
        opt = r["adamw"]
        assert opt["param_groups"] == saved["optimizer"]["param_groups"]
        assert opt["param_groups"][0]["lr"] != 0.5 and isinstance(
            opt["param_groups"][0]["betas"], tuple
        )
        assert list(opt["state"]) == list(saved["optimizer"]["state"])
        for i, s in saved["optimizer"]["state"].items():
            assert sorted(opt["state"][i]) == ["exp_avg", "exp_avg_sq", "step"]
            for k, v in s.items():
                assert torch.equal(opt["state"][i][k], v), (i, k)
        assert r["scheduler"] == saved["scheduler"] and r["scheduler"]["last_epoch"] == 2
        assert r["mixture"] == {"cursor": 7} and r["resets"] == [1] and r["step"] == 2
        assert torch.equal(r["rng"], saved["rng"]["torch"])
        assert r["alive"] == 3.0
        assert _equal(r["ref_after_errors"], ref) == []  # a failed load changed nothing

    e0, e1 = r0["errors"], r1["errors"]
    assert len(e0) == len(e1) == 4 and "no error" not in e0 + e1, (e0, e1)
    assert "gone" in e0[0] and "gone" in e0[1], e0  # rank 0's own error
    assert e0[2].startswith("ValueError") and "parameter group" in e0[2]
    for e in e1[:3]:  # rank 1: rank 0's, named
        assert e.startswith("RuntimeError: rank 0 could not read the checkpoint"), e
    assert "parameter group" in e1[2]
    # a config refusal stays a ConfigError (exit code 2) on every rank, with rank 0's text
    assert e0[3].startswith("CheckpointError") and "seed" in e0[3]
    assert e1[3] == "ConfigError" + e0[3][len("CheckpointError") :]

    for r in (r0, r1):
        label, weights = r["kept"]
        assert label == "checkpoint step_00000002"
        assert _equal(weights, policy) == []
        label, weights = r["lost"]
        assert label == "policy"
        assert torch.equal(
            weights["model.norm.weight"], torch.full_like(weights["model.norm.weight"], 3.0)
        )
