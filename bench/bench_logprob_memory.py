"""Peak memory of the trainer's log-prob pass: full logits against the chunked LM head.

    .venv/bin/python bench/bench_logprob_memory.py [--tokens 4096 8192] [--vocab 151936]
        [--hidden 896] [--device cpu|cuda] [--bf16] [--max-gb 8]

The pass is what ``prorl.policy.response_logprobs`` does after the decoder: from the last
hidden states ``[1, N, H]`` and an LM head ``[V, H]``, the sampled tokens' log-probs
(tempered), their entropy (a metric, no gradient), and the backward of a loss on the
log-probs into the hidden states and the head. Two variants:

* ``naive``: ``F.linear`` to the whole ``[1, N, V]`` logits, then
  ``selective_log_softmax`` and ``chunked_entropy`` on them (the path models outside
  ``prorl.policy.CHUNKED_HEAD`` still take, and every model took before);
* ``chunked``: ``prorl.rl.head.head_logprobs``, the LM head applied chunk by chunk.

Each (variant, N) runs in a fresh process. On the CPU its memory is the process's resident
high-water mark (``ru_maxrss``) minus the mark after building the inputs; on CUDA it is
``torch.cuda.max_memory_allocated`` minus what the inputs hold. A naive run whose logits
alone would take the peak past ``--max-gb`` is skipped and recorded as such. Writes
bench/results/logprob_memory.json (``--out``). Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

VARIANTS = ("naive", "chunked")


def _pass(variant: str, hidden: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor) -> Any:
    """One log-prob + entropy + backward pass; the log-probs (detached) and the entropy."""
    from prorl.rl import chunked_entropy, selective_log_softmax
    from prorl.rl.head import head_logprobs

    if variant == "naive":
        logits = F.linear(hidden, weight)  # [1, N, V]
        lp = selective_log_softmax(logits, ids, temperature=0.7)
        with torch.no_grad():
            ent = chunked_entropy(logits.detach(), temperature=0.7)
        del logits  # autograd keeps its own reference for the backward
    else:
        lp, ent = head_logprobs(hidden, weight, ids, temperature=0.7, with_entropy=True)
    (-lp.mean()).backward()
    return lp.detach(), ent


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Build the inputs, run one pass, report its memory on top of the inputs'."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    n, h, v = args.child_tokens, args.hidden, args.vocab
    # fp32 master weights, as the trainer holds them; the hidden states as the decoder's
    # final norm returns them (fp32 under autocast too: the residual stream is fp32)
    # filled in place: a temporary copy would raise the high-water mark before the pass
    weight = torch.empty(v, h).normal_(0.0, h**-0.5, generator=gen).to(device)
    hidden = torch.empty(1, n, h).normal_(generator=gen).to(device)
    weight.requires_grad_()
    hidden.requires_grad_()
    ids = torch.randint(0, v, (1, n), generator=gen).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _maxrss()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    t = time.perf_counter()
    with autocast:
        lp, ent = _pass(args.child_variant, hidden, weight, ids)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _maxrss()
    assert weight.grad is not None and hidden.grad is not None
    return {
        "variant": args.child_variant,
        "tokens": n,
        "pass_s": time.perf_counter() - t,
        "inputs_bytes": base,
        "peak_bytes": peak,
        "pass_bytes": peak - base,
        # the same numbers from both variants say they computed the same thing
        "logprob_mean": float(lp.double().mean()),
        "entropy_mean": float(ent.double().mean()),
        "grad_weight_norm": float(weight.grad.double().norm()),
        "grad_hidden_norm": float(hidden.grad.double().norm()),
    }


def _maxrss() -> int:
    """This process's resident high-water mark in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_child(args: argparse.Namespace, variant: str, tokens: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child-variant", variant, "--child-tokens", str(tokens)]
    cmd += ["--vocab", str(args.vocab), "--hidden", str(args.hidden), "--device", args.device]
    cmd += ["--threads", str(args.threads)] + (["--bf16"] if args.bf16 else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"variant": variant, "tokens": tokens, "error": done.stderr[-2000:]}
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def _naive_logits_gb(args: argparse.Namespace, tokens: int) -> float:
    """The naive pass's logits and their gradient, the least it needs on top of the inputs."""
    width = 2 if args.bf16 else 4
    return 2 * tokens * args.vocab * width / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--vocab", type=int, default=151_936)  # Qwen2's
    ap.add_argument("--hidden", type=int, default=896)  # Qwen2-0.5B's
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast, as the trainer on GPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-gb", type=float, default=8.0, help="skip a naive run needing more")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "logprob_memory.json"))
    ap.add_argument("--child-variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--child-tokens", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_variant:
        print(json.dumps(child(args)))
        return

    rows = []
    for tokens in args.tokens:
        for variant in VARIANTS:
            need = _naive_logits_gb(args, tokens)
            if variant == "naive" and need > args.max_gb:
                why = f"skipped: its logits and their gradient alone are {need:.1f} GB"
                rows.append({"variant": variant, "tokens": tokens, "skipped": why})
                print(f"{tokens:6d} tokens  {variant:8s} {why} (--max-gb {args.max_gb})")
                continue
            row = _run_child(args, variant, tokens)
            rows.append(row)
            if "error" in row:
                print(f"{tokens:6d} tokens  {variant:8s} failed:\n{row['error']}")
                continue
            print(
                f"{tokens:6d} tokens  {variant:8s} pass {row['pass_bytes'] / 1e9:6.2f} GB on top "
                f"of the inputs' {row['inputs_bytes'] / 1e9:5.2f} GB (peak "
                f"{row['peak_bytes'] / 1e9:5.2f} GB), {row['pass_s']:6.1f} s"
            )
    ratios = {}
    for tokens in args.tokens:
        by = {r["variant"]: r for r in rows if r["tokens"] == tokens and "pass_bytes" in r}
        if len(by) == 2:
            ratio = by["naive"]["pass_bytes"] / by["chunked"]["pass_bytes"]
            ratios[str(tokens)] = ratio
            agree = max(
                abs(by["naive"][k] - by["chunked"][k]) / max(abs(by["naive"][k]), 1e-12)
                for k in ("logprob_mean", "entropy_mean", "grad_weight_norm", "grad_hidden_norm")
            )
            print(
                f"{tokens:6d} tokens: naive / chunked pass memory = {ratio:.1f}x "
                f"(results agree to {agree:.1e} relative)"
            )
    result = {
        "vocab": args.vocab,
        "hidden": args.hidden,
        "device": args.device,
        "bf16": args.bf16,
        "threads": args.threads,
        "rows": rows,
        "naive_over_chunked": ratios,
        "load_avg": os.getloadavg(),
        "command": "bench/bench_logprob_memory.py " + " ".join(sys.argv[1:]),
        "git": _git(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if any("error" in r for r in rows):
        sys.exit(1)


def _git() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
