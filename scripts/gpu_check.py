"""The Python parts of scripts/gpu-check.sh (docs/gpu.md); run from the repository root.

    python3 scripts/gpu_check.py resume OUT_DIR       # CUDA training, SIGKILL, exact resume
    python3 scripts/gpu_check.py throughput OUT_DIR   # learner tokens/s, fraction of bf16 peak
    python3 scripts/gpu_check.py prorl ARGS...        # prorl's CLI with deterministic kernels

Each writes ``OUT_DIR/<part>.json`` and exits non-zero when its check failed. The functions
take a ``device`` so that their logic can be tried on the CPU (at a toy size for the
throughput); the script itself always runs them on ``cuda``.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

# The tiny model on the toy task, as tests/test_checkpoint.py's exact-resume test runs it on
# the CPU; here on CUDA with bf16 autocast (the policy and AdamW state stay fp32).
TOY = [
    "model.name=tiny",
    "tensorboard=false",
    "data.tasks=toy-even",
    "data.val_problems=2",
    "rollout.prompts_per_step=2",
    "rollout.n=4",
    "rollout.max_new_tokens=4",
    "algo.micro_batch_size=8",
    "algo.mini_batches=1",
    "algo.kl_coef=1e-3",
    "optim.lr=3e-3",
    "eval.n=2",
    "eval.every=2",
    "verify.workers=0",
    "reset.every=3",
    "checkpoint.every=1",
    "checkpoint.keep_last=2",
]
TIMING = ("time/", "perf/", "time")  # wall-clock keys differ between any two runs


def _prorl(*args: str) -> list[str]:
    return [sys.executable, __file__, "prorl", *args]


def _rows(path: Path) -> list[dict[str, Any]]:
    from prorl.metrics import read_jsonl

    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in read_jsonl(path)]


def _policy_params(run: Path) -> tuple[str, dict[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM

    from prorl import checkpoint as ckpt

    last = ckpt.checkpoint_dirs(run)[-1]
    model = AutoModelForCausalLM.from_pretrained(last / "policy", dtype="auto")
    return last.name, {k: v.detach() for k, v in model.named_parameters()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def resume(out: Path, device: str = "cuda", steps: int = 6, kill_at: int = 3) -> bool:
    """A straight run of ``steps`` steps against one SIGKILLed after its step-``kill_at``
    checkpoint and resumed: the same metrics and final weights, bit for bit."""
    from prorl import checkpoint as ckpt

    work = out / "resume-runs"
    straight, killed = work / "straight", work / "killed"
    bf16 = str(device.startswith("cuda")).lower()  # fp32 on the CPU, as the tests run it
    common = [*TOY, f"model.device={device}", f"model.bf16={bf16}", f"steps={steps}"]
    subprocess.run(_prorl("train", "--run-dir", str(straight), *common), check=True)
    proc = subprocess.Popen(_prorl("train", "--run-dir", str(killed), *common))
    marker = killed / "checkpoints" / ckpt.step_name(kill_at) / ckpt.MARKER
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_mid_run = proc.returncode == -signal.SIGKILL
    last_before = ckpt.checkpoint_dirs(killed)[-1].name
    resumed = subprocess.run(_prorl("train", "--resume", str(killed)))

    rows1, rows2 = _rows(straight / "metrics.jsonl"), _rows(killed / "metrics.jsonl")
    diffs: dict[str, float] = {}
    for r1, r2 in zip(rows1, rows2, strict=False):
        for k in set(r1) | set(r2):
            a, b = r1.get(k), r2.get(k)
            if isinstance(a, int | float) and isinstance(b, int | float):
                diffs[k] = max(diffs.get(k, 0.0), abs(float(a) - float(b)))
    name1, p1 = _policy_params(straight)
    name2, p2 = _policy_params(killed)
    param_diff = max((p1[k].float() - p2[k].float()).abs().max().item() for k in p1)
    result = {
        "steps": steps,
        "killed_after_checkpoint": kill_at,
        "killed_mid_run": killed_mid_run,
        "last_checkpoint_at_kill": last_before,
        "resume_returncode": resumed.returncode,
        "final_checkpoints": [name1, name2],
        "metric_steps": [[r["step"] for r in rows] for rows in (rows1, rows2)],
        "metrics_equal": rows1 == rows2,
        "metric_max_abs_diff": {k: v for k, v in sorted(diffs.items()) if v > 0},
        "params_equal": all(torch.equal(p1[k], p2[k]) for k in p1),
        "param_max_abs_diff": param_diff,
        "param_dtypes": sorted({str(v.dtype) for v in p1.values()}),
        "train_reward": [r.get("train/reward") for r in rows1],
    }
    ok = killed_mid_run and resumed.returncode == 0 and rows1 == rows2 and result["params_equal"]
    result["ok"] = ok
    (out / "resume.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ok", "metrics_equal", "params_equal")}))
    return bool(ok)


# Qwen2-0.5B's shape (Qwen2.5-0.5B-Instruct's config.json), randomly initialised: no download.
QWEN2_05B = {
    "vocab_size": 151_936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32_768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


def matmul_peak(device: str = "cuda", n: int = 8192, reps: int = 20) -> float:
    """bf16 TFLOP/s of an ``[n, n] @ [n, n]`` product on ``device`` (best of three)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best / 1e12


def throughput(
    out: Path,
    device: str = "cuda",
    shape: dict[str, Any] | None = None,
    prompts: int = 4,
    n: int = 4,
    prompt_len: int = 512,
    resp_len: int = 1536,
    peak_n: int = 8192,
) -> bool:
    """``prorl.update.update_policy`` (reference forward, policy forward/backward, AdamW) on
    one batch of random tokens, for a random policy of ``shape`` (Qwen2-0.5B's)."""
    shape = shape or QWEN2_05B
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from prorl.config import load_config
    from prorl.rollouts import PromptGroup, RolloutBatch
    from prorl.state import TrainState, frozen_copy, make_optimizer
    from prorl.types import Example, Sample, Score
    from prorl.update import update_policy

    torch.manual_seed(0)
    with torch.device(device):
        policy = Qwen2ForCausalLM(Qwen2Config(**shape))  # fp32 master weights
    ref = frozen_copy(policy).to(torch.bfloat16)  # model.dtype=bfloat16's reference
    cfg = load_config(
        "debug",
        [
            f"model.device={device}",
            f"model.bf16={str(device.startswith('cuda')).lower()}",
            f"rollout.n={n}",
            f"rollout.prompts_per_step={prompts}",
            f"rollout.max_new_tokens={resp_len}",
            "algo.micro_batch_size=4",
            "algo.mini_batches=1",
            "algo.kl_coef=1e-3",
        ],
    )
    vocab = shape["vocab_size"]
    gen = torch.Generator().manual_seed(0)
    groups = []
    for i in range(prompts):
        ex = Example(f"bench:{i}", "bench", ({"role": "user", "content": ""},), "")
        prompt = torch.randint(0, vocab, (prompt_len,), generator=gen).tolist()
        toks = torch.randint(0, vocab, (n, resp_len), generator=gen).tolist()
        samples = [Sample(tuple(t), (-1.0,) * resp_len, "", "length") for t in toks]
        groups.append(PromptGroup(ex, prompt, samples, [Score(float(j % 2)) for j in range(n)]))
    optimizer, scheduler = make_optimizer(cfg, policy)
    tok = SimpleNamespace(pad_token_id=0)
    state = TrainState(cfg, policy, tok, ref, optimizer, scheduler, None, None, None)  # type: ignore[arg-type]
    adv = (torch.tensor([r for g in groups for r in g.rewards]) - 0.5) * 2

    def update() -> float:
        _sync(device)
        t = time.perf_counter()
        update_policy(state, RolloutBatch.from_groups(groups, adv))
        _sync(device)
        return time.perf_counter() - t

    cuda = device.startswith("cuda")
    warmup = update()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = [update() for _ in range(3)]
    peak = matmul_peak(device, peak_n)
    wall = statistics.median(times)

    params = sum(p.numel() for p in policy.parameters())
    head = policy.get_output_embeddings().weight.numel()
    seqs, seq_len = prompts * n, prompt_len + resp_len
    real, resp = seqs * seq_len, seqs * resp_len
    passes = 4  # forward + backward = 3 forwards, plus the reference's forward (KL)
    # as bench/bench_learner.py: the body on every token, the LM head on response positions
    flop = passes * 2 * ((params - head) * real + head * resp)
    # causal attention's QK^T and AV: 2 matmuls x 2 FLOP x seq_len^2 / 2 x width, per layer
    width = shape["hidden_size"]  # heads x head size
    attn = passes * seqs * shape["num_hidden_layers"] * 2 * seq_len**2 * width
    result = {
        "model": shape,
        "params": params,
        "batch": {"sequences": seqs, "prompt_len": prompt_len, "response_len": resp_len},
        "tokens_per_update": real,
        "update_s": times,
        "warmup_s": warmup,
        "tokens_per_s": real / wall,
        "bf16_peak_tflops": peak,
        "tflops": flop / wall / 1e12,
        "fraction_of_peak": flop / wall / 1e12 / peak,
        "fraction_of_peak_with_attention": (flop + attn) / wall / 1e12 / peak,
        "max_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "gpu": torch.cuda.get_device_name() if cuda else device,
        "torch": torch.__version__,
    }
    (out / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"update {wall:.2f} s, {result['tokens_per_s']:.0f} tokens/s, {result['tflops']:.0f} "
        f"TFLOP/s = {100 * result['fraction_of_peak']:.1f}% of the bf16 peak measured here "
        f"({peak:.0f} TFLOP/s; {100 * result['fraction_of_peak_with_attention']:.1f}% "
        "counting attention)"
    )
    return True


def deterministic_prorl(args: list[str]) -> int:
    """prorl's CLI with deterministic CUDA kernels: two runs then compute the same bits, so a
    resumed run can be compared with a straight one exactly."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    from prorl.cli import main

    return main(args)


def main() -> int:
    part, rest = sys.argv[1], sys.argv[2:]
    if part == "prorl":
        return deterministic_prorl(rest)
    out = Path(rest[0])
    out.mkdir(parents=True, exist_ok=True)
    check = {"resume": resume, "throughput": throughput}[part]
    return 0 if check(out) else 1


if __name__ == "__main__":
    sys.exit(main())
