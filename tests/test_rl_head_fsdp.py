"""The chunked LM head inside an FSDP2-sharded model (a real gloo group of two ranks): the
head's weight is a shard outside the forward, so the log-probs must be computed inside it.
Log-probs, entropy, the frozen reference's log-probs and every gradient equal one
process's. (DDP: tests/test_torchrun.py, -m slow, trains through it on two ranks.)"""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any

import torch
import torch.multiprocessing as mp


def _rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from prorl.models import load_policy
    from prorl.policy import pack, response_logprobs
    from prorl.scale.fsdp import shard_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model, _ = load_policy("tiny")
    single, ref = copy.deepcopy(model), copy.deepcopy(model)
    shard_model(model)
    ref.requires_grad_(False)
    shard_model(ref, frozen=True)  # its root reshards after the forward
    batch = pack([[5, 6, 7, 8, 9], [10, 11]], [[20, 21, 22], [23]], pad_id=0)
    mask = batch.response_mask.float()
    # every rank the same rows: FSDP2's mean of the ranks' gradients is one process's
    lp, ent = response_logprobs(model, batch, 0.7, bf16=False, with_entropy=True)
    (lp * mask).sum().backward()
    with torch.no_grad():
        ref_lp, _ = response_logprobs(ref, batch, 0.7, bf16=False)
    want, want_ent = response_logprobs(single, batch, 0.7, bf16=False, with_entropy=True)
    (want * mask).sum().backward()
    got_g = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
    if rank == 0:
        result = {"lp": lp.detach(), "ent": ent, "ref_lp": ref_lp, "want": want.detach()}
        result |= {"want_ent": want_ent, "got_g": got_g, "head": type(model.lm_head).__name__}
        result["want_g"] = {n: p.grad for n, p in single.named_parameters()}
        torch.save(result, out)
    dist.destroy_process_group()


def test_chunked_head_in_an_fsdp2_model_matches_one_process(tmp_path: Any) -> None:
    fd, name = tempfile.mkstemp(dir=tmp_path)
    os.close(fd)
    out = str(tmp_path / "result.pt")
    mp.spawn(_rank, args=(2, f"file://{name}", out), nprocs=2, join=True)
    r = torch.load(out, weights_only=False)
    assert r["head"] == "Linear"  # put back after the pass
    torch.testing.assert_close(r["lp"], r["want"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(r["ref_lp"], r["want"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(r["ent"], r["want_ent"], atol=1e-6, rtol=1e-6)
    assert r["got_g"].keys() == r["want_g"].keys()
    for n, g in r["want_g"].items():
        torch.testing.assert_close(r["got_g"][n], g, atol=1e-6, rtol=1e-5, msg=n)
