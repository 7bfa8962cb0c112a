"""FSDP2 helpers (prorl.scale.fsdp) without Ray: the optimizer state format conversions,
the layers that get sharded, the config, and a real gloo group checking that accumulation
without gradient sync plus zero-weight padding passes give one process's gradients, that
the clipped gradient norm over shards equals one process's and that whole states gathered
from shards load back exactly, and that a checkpoint read by rank 0 alone and scattered
gives the shards every rank reading it did. The full Ray runs are in test_fsdp_ray.py."""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from checkpoint_fixtures import loading_state, write_checkpoint
from prorl.config import ConfigError, load_config
from prorl.models import load_policy
from prorl.scale.fsdp import decoder_layers, retie, to_indexed, to_named


def _trained_optimizer() -> tuple[Any, torch.optim.Optimizer]:
    model, _ = load_policy("tiny")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.arange(12).reshape(2, 6)
    model(ids, labels=ids).loss.backward()
    opt.step()
    return model, opt


def test_optimizer_state_converts_between_numbered_and_named_exactly() -> None:
    model, opt = _trained_optimizer()
    names = [[n for n, p in model.named_parameters() if p.requires_grad]]
    plain = opt.state_dict()
    named = to_named(plain, names)
    assert list(named["state"])[:2] == [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
    ]
    assert named["param_groups"][0]["params"] == names[0]
    assert named["state"]["model.norm.weight"] is plain["state"][len(names[0]) - 1]
    back = to_indexed(named)
    assert back["param_groups"] == plain["param_groups"]
    assert list(back["state"]) == list(plain["state"])
    # and it loads into a fresh optimizer as the original state dict would
    fresh = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    fresh.load_state_dict(back)
    for i, s in opt.state_dict()["state"].items():
        assert torch.equal(fresh.state_dict()["state"][i]["exp_avg"], s["exp_avg"])
    with pytest.raises(ValueError, match="does not fit"):
        to_named(plain, [names[0][:-1]])


def test_two_groups_number_parameters_across_groups() -> None:
    named = {
        "state": {"b": {"step": 1}, "c": {"step": 2}},  # "a" has no gradient yet: no state
        "param_groups": [{"lr": 1.0, "params": ["a", "b"]}, {"lr": 2.0, "params": ["c"]}],
    }
    plain = to_indexed(named)
    assert plain == {
        "state": {1: {"step": 1}, 2: {"step": 2}},
        "param_groups": [{"lr": 1.0, "params": [0, 1]}, {"lr": 2.0, "params": [2]}],
    }
    assert to_named(plain, [["a", "b"], ["c"]]) == named


def test_decoder_layers_and_tied_weights() -> None:
    model, _ = load_policy("tiny")
    layers = decoder_layers(model)
    assert [type(m).__name__ for m in layers] == ["LlamaDecoderLayer"] * 2
    with pytest.raises(ConfigError, match="scale.learner_strategy=ddp"):
        decoder_layers(torch.nn.Linear(2, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert state["lm_head.weight"] is not state["model.embed_tokens.weight"]
    retie(model, state)  # the tiny model ties its head to the embedding
    assert state["lm_head.weight"] is state["model.embed_tokens.weight"]


def test_learner_strategy_config() -> None:
    with pytest.raises(ConfigError, match="scale.learner_strategy"):
        load_config("debug", ["scale.learner_strategy=zero3"])
    assert load_config("debug", []).scale.learner_strategy == "ddp"


def test_fsdp2_under_torchrun_is_refused_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from prorl.scale import Scale

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config("debug", ["scale.learner_strategy=fsdp2"])
    with pytest.raises(ConfigError, match="scale.backend=ray"):
        Scale.start(cfg)


def _rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from prorl.scale.fsdp import (
        FullyShardedLearner,
        full_model_state,
        full_optimizer_state,
        load_full_model_state,
        load_optimizer_state,
        shard_model,
    )

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model, _ = load_policy("tiny")
    single = copy.deepcopy(model)
    shard_model(model)
    held = _gather(sum(p.to_local().numel() for p in model.parameters()), world)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # One process: the mean loss of 5 equal-length rows. The group: each rank its share of
    # the rows, one micro-batch per row, accumulated without gradient sync until the last;
    # the rank with fewer rows pads with a zero-weight pass; each loss is scaled as
    # prorl.train does (1/5 of a row's mean, times the ranks FSDP2 averages over).
    ids = torch.arange(1, 31).reshape(5, 6) * 7
    single(ids, labels=ids).loss.backward()
    want = torch.nn.utils.clip_grad_norm_(single.parameters(), 0.1)
    learner = FullyShardedLearner(model)
    own = learner.shard(list(range(5)), 1)
    assert len({len(x) for x in _gather(own, world)}) == 1  # equal pass counts everywhere
    for j, (rows, weight) in enumerate(own):
        with learner.sync(last=j == len(own) - 1):
            x = ids[rows]
            (model(x, labels=x).loss / 5 * weight * world).backward()
    got = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # as prorl.train calls it
    clipped = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
    opt.step()
    weights = full_model_state(model, everyone=True)
    saved = full_optimizer_state(model, opt)
    # a fresh sharded model and AdamW take the whole states back
    fresh, _ = load_policy("tiny")
    shard_model(fresh)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    load_full_model_state(fresh, weights)  # rank 0's, scattered
    load_optimizer_state(fresh, fresh_opt, saved)  # rank 0's ({} elsewhere), scattered
    again = full_model_state(fresh)
    resaved = full_optimizer_state(fresh, fresh_opt)
    if rank == 0:
        grads = {n: p.grad for n, p in single.named_parameters()}
        total = sum(p.numel() for p in single.parameters())
        torch.save(
            {
                "held": held,
                "total": total,
                "want": want,
                "got": float(got),
                "clipped": clipped,
                "grads": grads,
                "weights": weights,
                "again": again,
                "saved": saved,
                "resaved": resaved,
            },
            out,
        )
    dist.destroy_process_group()


def _gather(value: Any, world: int) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out


# 2 ranks: 2 + pad | 3 micro-batches; 3 ranks: 1 + pad | 2 | 2, and uneven shards (64 rows
# do not split in 3); 3 processes on 2 cores take > 20 s
@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_sharded_clip_norm_and_state_round_trip_in_a_gloo_group(tmp_path: Any, world: int) -> None:
    fd, name = tempfile.mkstemp(dir=tmp_path)
    os.close(fd)
    out = str(tmp_path / "result.pt")
    mp.spawn(_rank, args=(world, f"file://{name}", out), nprocs=world, join=True)
    r = torch.load(out, weights_only=False)
    # each rank holds its share of the parameters (so of AdamW's moments), together all
    assert sum(r["held"]) == r["total"] and max(r["held"]) <= r["total"] / world * 1.01
    # the norm over both ranks' shards is one process's norm, up to summation order
    torch.testing.assert_close(r["got"], float(r["want"]), rtol=1e-5, atol=0)
    assert r["want"] > 0.1  # the clip did act
    for n, g in r["grads"].items():
        torch.testing.assert_close(r["clipped"][n], g, rtol=1e-4, atol=1e-7, msg=n)
    for k, v in r["weights"].items():
        assert torch.equal(r["again"][k], v), k  # gathered -> loaded -> gathered: exact
    assert r["resaved"]["param_groups"] == r["saved"]["param_groups"]
    for i, s in r["saved"]["state"].items():
        for k, v in s.items():
            assert torch.equal(r["resaved"]["state"][i][k], v), (i, k)


def _fresh_sharded() -> Any:
    """A TrainState's loading surface over freshly built, sharded models (other weights
    and another learning rate than the checkpoint's)."""
    from prorl.models import tiny_model
    from prorl.scale.fsdp import shard_model

    policy, tok = load_policy("tiny")
    ref = tiny_model(tok, seed=2)
    shard_model(policy)
    shard_model(ref, frozen=True)
    return loading_state(policy, ref, load_config("debug", ["optim.lr=0.5"]))


def _load_on_every_rank(state: Any, folder: Any) -> None:
    """How an FSDP2 group loaded a checkpoint before rank 0 read it alone: every rank reads
    the whole files and keeps its shards (torch's full_state_dict load without broadcast)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from transformers import AutoModelForCausalLM

    every = StateDictOptions(full_state_dict=True)
    weights = AutoModelForCausalLM.from_pretrained(folder / "policy").state_dict()
    set_model_state_dict(state.policy, dict(weights), options=every)
    set_model_state_dict(state.ref, torch.load(folder / "reference.pt"), options=every)
    saved = torch.load(folder / "trainer.pt", weights_only=True)["optimizer"]
    names = {id(p): n for n, p in state.policy.named_parameters()}
    groups = [[names[id(p)] for p in g["params"]] for g in state.optimizer.param_groups]
    set_optimizer_state_dict(state.policy, state.optimizer, to_named(saved, groups), options=every)
    for group, kept in zip(state.optimizer.param_groups, saved["param_groups"], strict=True):
        group.update({k: v for k, v in kept.items() if k != "params"})


def _shards(state: Any) -> dict[str, torch.Tensor]:
    """This rank's shards of the policy, the reference and AdamW's moments, by name."""
    out = {f"policy.{n}": p.to_local() for n, p in state.policy.named_parameters()}
    out.update({f"ref.{n}": p.to_local() for n, p in state.ref.named_parameters()})
    for n, p in state.policy.named_parameters():
        for k, v in state.optimizer.state.get(p, {}).items():  # not [p]: a defaultdict
            out[f"adamw.{n}.{k}"] = v.to_local() if hasattr(v, "to_local") else v
    return out


def _rank_loads(rank: int, world: int, init: str, folder: str, out: str) -> None:
    import datetime
    from pathlib import Path

    import torch.distributed as dist

    from prorl import state as state_mod

    torch.set_num_threads(1)
    # a short timeout: a rank left waiting for a peer fails the test instead of hanging it
    dist.init_process_group(
        "gloo",
        init_method=init,
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    real = Path(folder)
    # ranks > 0 are handed a folder that does not exist: any file they read fails
    mine = real if rank == 0 else real.parent / "not-there"
    state = _fresh_sharded()
    before = {k: v.clone() for k, v in _shards(state).items() if k.startswith("policy.")}
    state_mod.restore_state(state, mine)
    rng = torch.get_rng_state()
    today = _fresh_sharded()
    _load_on_every_rank(today, real)
    got, want = _shards(state), _shards(today)
    result = {
        "keys": sorted(got) == sorted(want),
        "moments": sum(".exp_avg" in k for k in got),
        "differ": [k for k in want if not torch.equal(got[k], want[k])],
        "moved": [k for k, v in before.items() if not torch.equal(got[k], v)],
        "groups": [
            {k: v for k, v in g.items() if k != "params"} for g in state.optimizer.param_groups
        ],
        "today_groups": [
            {k: v for k, v in g.items() if k != "params"} for g in today.optimizer.param_groups
        ],
        "scheduler": state.scheduler.state_dict()["last_epoch"],
        "mixture": state.mixture.loaded,
        "resets": state.resets,
        "step": state.step,
        "rng": torch.equal(rng, torch.load(real / "trainer.pt")["rng"]["torch"]),
    }
    # rank 0 cannot read a checkpoint: every rank raises, none is left waiting
    errors = []
    for load in (
        lambda: state_mod.load_weights(state.ref, real.parent / "gone" / "policy"),
        lambda: state_mod.restore_state(state, real.parent / "gone"),
    ):
        try:
            load()
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    result["errors"] = errors
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


def test_only_rank_0_reads_a_checkpoint_and_the_shards_equal_every_rank_reading(
    tmp_path: Any,
) -> None:
    folder = write_checkpoint(tmp_path / "run")
    fd, name = tempfile.mkstemp(dir=tmp_path)
    os.close(fd)
    out = str(tmp_path / "result")
    mp.spawn(_rank_loads, args=(2, f"file://{name}", str(folder), out), nprocs=2, join=True)
    saved = torch.load(folder / "trainer.pt", weights_only=True)
    for rank in (0, 1):
        r = torch.load(f"{out}.{rank}", weights_only=False)
        assert r["keys"] and r["moments"] > 0
        # bitwise the shards that reading the whole checkpoint on every rank gives
        assert r["differ"] == [], (rank, r["differ"])
        assert r["moved"], rank  # and the load did replace the fresh weights
        assert r["groups"] == r["today_groups"]
        assert r["groups"][0]["lr"] == saved["optimizer"]["param_groups"][0]["lr"] != 0.5
        assert isinstance(r["groups"][0]["betas"], tuple)
        assert r["scheduler"] == 2 and r["mixture"] == {"cursor": 7}
        assert r["resets"] == [1] and r["step"] == 2 and r["rng"]
        assert len(r["errors"]) == 2, (rank, r["errors"])
        if rank == 1:
            assert all("rank 0 could not read the checkpoint" in e for e in r["errors"])
        else:
            assert all("gone" in e for e in r["errors"]), r["errors"]
