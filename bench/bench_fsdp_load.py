"""Host memory of an FSDP2 (or DDP) group loading a checkpoint: every rank reading it vs
rank 0 only.

    .venv/bin/python bench/bench_fsdp_load.py [--hidden 768] [--layers 6] [--ranks 2]
        [--strategy fsdp2|ddp]

Writes a one-process checkpoint (policy folder, reference.pt, trainer.pt with AdamW's
moments) of a random Llama of the given size, then loads it into freshly built, sharded
policy, reference and AdamW on ``--ranks`` gloo ranks (fresh processes per variant):

- ``every_rank``: what ``prorl.checkpoint.restore_state`` did before: every rank reads the
  whole files and keeps its shards (torch's ``full_state_dict`` load without broadcast);
- ``rank0``: ``restore_state`` now: rank 0 reads, the others receive their shards tensor by
  tensor (``broadcast_from_rank0``).

``--strategy ddp``: unsharded models (every rank holds the whole model and AdamW state);
``every_rank`` is then each rank's own ``load_state_dict`` of the files, ``rank0`` rank 0
reading and broadcasting each tensor in place (``prorl.scale.learner``).

Per rank it reports the peak resident memory above the resident memory just before the
load (Linux: peak reset through /proc/self/clear_refs, read from VmHWM), and the load's
wall time. Writes bench/results/fsdp_load.json (ddp: ddp_load.json). Measured, not asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.multiprocessing as mp

MB = 2**20


def _model(hidden: int, layers: int, seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    from prorl.models import load_policy

    _, tok = load_policy("tiny", tokenizer_only=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 128,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg), tok


def write_checkpoint(root: Path, hidden: int, layers: int) -> tuple[Path, int]:
    from prorl import checkpoint as ckpt
    from prorl.config import load_config
    from prorl.state import make_optimizer

    model, tok = _model(hidden, layers, 0)
    ref, _ = _model(hidden, layers, 1)
    opt, sched = make_optimizer(load_config("debug", []), model)
    ids = torch.arange(1, 17).reshape(2, 8)
    model(ids, labels=ids).loss.backward()
    opt.step()
    sched.step()
    trainer = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "mixture": {},
        "rng": ckpt.rng_state(),
        "resets": [],
        "resetter": {},
        "health": {},
    }
    params = sum(p.numel() for p in model.parameters())
    return ckpt.save_checkpoint(root / "run", 1, model, tok, ref, trainer, {}), params


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _every_rank_ddp(state: Any, folder: Path) -> None:
    """A DDP group's load before rank-0 reading: every rank reads the whole files."""
    from transformers import AutoModelForCausalLM

    from prorl import checkpoint as ckpt

    ckpt._quiet_hf()
    state.policy.load_state_dict(
        AutoModelForCausalLM.from_pretrained(folder / "policy").state_dict()
    )
    state.ref.load_state_dict(
        torch.load(folder / "reference.pt", map_location="cpu", weights_only=True)
    )
    saved = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
    state.optimizer.load_state_dict(saved["optimizer"])


def _every_rank(state: Any, folder: Path) -> None:
    """The load before rank-0 reading (kept here to measure it)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from transformers import AutoModelForCausalLM

    from prorl import checkpoint as ckpt
    from prorl.scale.fsdp import to_named

    ckpt._quiet_hf()
    every = StateDictOptions(full_state_dict=True)
    weights = AutoModelForCausalLM.from_pretrained(folder / "policy").state_dict()
    set_model_state_dict(state.policy, dict(weights), options=every)
    del weights
    ref = torch.load(folder / "reference.pt", map_location="cpu", weights_only=True)
    set_model_state_dict(state.ref, ref, options=every)
    del ref
    saved = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
    names = {id(p): n for n, p in state.policy.named_parameters()}
    groups = [[names[id(p)] for p in g["params"]] for g in state.optimizer.param_groups]
    named = to_named(saved["optimizer"], groups)
    set_optimizer_state_dict(state.policy, state.optimizer, named, options=every)


def _rank(rank: int, world: int, init: str, variant: str, args: Any, out: str) -> None:
    import torch.distributed as dist

    from prorl import state as state_mod
    from prorl.config import load_config
    from prorl.scale.fsdp import shard_model
    from prorl.state import make_optimizer

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=init,
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    policy, _ = _model(args.hidden, args.layers, 2)
    ref, _ = _model(args.hidden, args.layers, 3)
    if args.strategy == "fsdp2":
        shard_model(policy)
        shard_model(ref, frozen=True)
    opt, sched = make_optimizer(load_config("debug", []), policy)
    # AdamW's sharded moments exist before the load in a running job too: make them now,
    # with a zero step, so that the peak below is the load's alone
    for p in policy.parameters():
        p.grad = torch.zeros_like(p)
    lr = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr"] = 0.0
    opt.step()
    opt.param_groups[0]["lr"] = lr
    opt.zero_grad(set_to_none=True)
    state = SimpleNamespace(
        policy=policy,
        ref=ref,
        optimizer=opt,
        scheduler=sched,
        mixture=SimpleNamespace(load_state_dict=lambda s: None),
        resets=[],
        resetter=None,
        health=None,
        step=0,
    )
    folder = Path(args.folder)
    dist.barrier()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    t0 = time.perf_counter()
    if variant == "rank0":
        state_mod.restore_state(state, folder)
    elif args.strategy == "ddp":
        _every_rank_ddp(state, folder)
    else:
        _every_rank(state, folder)
    dist.barrier()
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM") - before
    Path(f"{out}.{rank}").write_text(json.dumps({"peak_mb": peak / MB, "load_s": seconds}))
    dist.destroy_process_group()


def measure(variant: str, args: Any, root: Path) -> list[dict[str, float]]:
    fd, name = tempfile.mkstemp(dir=root)
    os.close(fd)
    out = str(root / f"result-{variant}")
    mp.spawn(
        _rank, args=(args.ranks, f"file://{name}", variant, args, out), nprocs=args.ranks, join=True
    )
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(args.ranks)]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--strategy", choices=("fsdp2", "ddp"), default="fsdp2")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-fsdp-load-"))
    folder, params = write_checkpoint(root, args.hidden, args.layers)
    args.folder = str(folder)
    result: dict[str, Any] = {
        "strategy": args.strategy,
        "hidden": args.hidden,
        "layers": args.layers,
        "ranks": args.ranks,
        "params": params,
        "model_fp32_mb": params * 4 / MB,
        "machine": platform.machine(),
    }
    for variant in ("every_rank", "rank0"):
        result[variant] = measure(variant, args, root)
        print(variant, json.dumps(result[variant]), flush=True)
    for r in range(args.ranks):
        old, new = result["every_rank"][r]["peak_mb"], result["rank0"][r]["peak_mb"]
        print(
            f"rank {r}: load peak {old:.0f} MB -> {new:.0f} MB ({new / old:.2f}x); "
            f"model {result['model_fp32_mb']:.0f} MB in fp32"
        )
    name = "fsdp_load.json" if args.strategy == "fsdp2" else "ddp_load.json"
    path = Path(__file__).parent / "results" / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
