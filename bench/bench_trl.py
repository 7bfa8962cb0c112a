"""Whole RL step: prorl vs TRL's GRPOTrainer at matched settings, side by side.

    bash bench/trl_venv.sh          # once: TRL in its own venv (.bench-venv)
    .venv/bin/python bench/bench_trl.py [--steps 3] [--rounds 2] [key=value ...]

Both train the embedded SmolLM2-135M on the same prompts (the cpu-smollm2 preset's task mix,
drawn here once and handed to both), with the same samples per prompt, response length,
temperature, batch (prompts_per_step x n sequences, micro-batches of algo.micro_batch_size,
one optimizer step per RL step), loss (clipped token-mean with eps_low/eps_high, GRPO group
advantages, k3 KL to a frozen reference with kl_coef), AdamW lr, grad clipping and bf16
autocast. prorl's dynamic sampling is off (TRL has none) and rewards come from the same
prorl verifiers (prorl: its verifier pool; TRL: a reward function calling task.score).

Each side runs in its own subprocess (prorl from .venv, TRL from .bench-venv), ``--rounds``
times, alternating which goes first; the first step of each run is a warm-up and is not
timed. Reports the median step time of each, the ratio, tokens generated per step, and what
each spends its time on. Writes bench/results/trl.json. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRORL_PY = ROOT / ".venv" / "bin" / "python"
TRL_PY = ROOT / ".bench-venv" / "bin" / "python"


# --- parent: draw the prompts, run both sides, compare ----------------------------------------


def make_job(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from prorl.config import load_config, to_dict
    from prorl.mixture import MixtureEntry, TaskMixture
    from prorl.models import embedded_model_dir, encode_prompts, load_tokenizer
    from prorl.tasks import build_tasks

    overrides = [
        f"steps={args.steps}",
        "data.val_problems=0",
        "tensorboard=false",
        "rollout.dynamic_sampling=false",
        f"threads={args.threads}",
        *args.overrides,
    ]
    cfg = load_config(args.preset, overrides)
    tasks = build_tasks(cfg.data.tasks)
    # The same draws rl_step makes: one round per step without dynamic sampling.
    mixture = TaskMixture(
        [MixtureEntry(s.name, s.weight, tasks[s.name]) for s in cfg.data.tasks], cfg.seed
    )
    tok = load_tokenizer(cfg.model.name)
    examples = [
        ex for s in range(args.steps) for ex in mixture.draw(cfg.rollout.prompts_per_step, s)
    ]
    settings = {s.name: dict(s.settings) for s in cfg.data.tasks}
    return {
        "preset": args.preset,
        "overrides": overrides,
        "config": to_dict(cfg),
        "model_dir": str(embedded_model_dir(cfg.model.name)),
        "steps": args.steps,
        "threads": args.threads,
        "trl_compile": args.trl_compile,
        "tmp": str(tmp),
        "examples": [
            {
                "uid": ex.uid,
                "task": ex.task,
                "index": int(ex.uid.rsplit(":", 1)[-1])
                if ex.uid.rsplit(":", 1)[-1].isdigit()
                else None,
                "prompt": [dict(m) for m in ex.prompt],
                "prompt_ids": ids,
                "settings": settings[ex.task],
            }
            for ex, ids in zip(examples, encode_prompts(tok, examples), strict=True)
        ],
    }


def run_side(side: str, job_file: Path, out_file: Path) -> dict[str, Any]:
    py = PRORL_PY if side == "prorl" else TRL_PY
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    t = time.monotonic()
    proc = subprocess.run(
        [str(py), __file__, "--child", side, str(job_file), str(out_file)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.exit(f"bench_trl: the {side} run failed:\n{proc.stderr[-4000:]}")
    result = json.loads(out_file.read_text())
    result["process_s"] = time.monotonic() - t
    return dict(result)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3, help="steps per run; the first is warm-up")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each side, interleaved")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="cpu-smollm2")
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "JOB", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--trl-compile",
        choices=("follow", "on", "off"),
        default="follow",
        help="TRL's torch_compile: follow prorl's model.compile (matched), or force it",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trl.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.child:
        side, job_file, out_file = args.child
        job = json.loads(Path(job_file).read_text())
        res = child_prorl(job) if side == "prorl" else child_trl(job)
        Path(out_file).write_text(json.dumps(res))
        return
    if not TRL_PY.exists():
        sys.exit("bench_trl: .bench-venv is missing; run: bash bench/trl_venv.sh")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = make_job(args, tmp)
        (tmp / "job.json").write_text(json.dumps(job))
        runs: dict[str, list[dict[str, Any]]] = {"prorl": [], "trl": []}
        loads = [os.getloadavg()[0]]
        for r in range(args.rounds):
            order = ("prorl", "trl") if r % 2 == 0 else ("trl", "prorl")
            for side in order:
                res = run_side(side, tmp / "job.json", tmp / f"{side}{r}.json")
                runs[side].append(res)
                loads.append(os.getloadavg()[0])
                print(f"round {r} {side}: steps {[round(s, 1) for s in res['step_s']]}", flush=True)
    report(args, job, runs, loads)


def report(
    args: argparse.Namespace, job: dict[str, Any], runs: dict[str, list[dict]], loads: list[float]
) -> None:
    summary: dict[str, Any] = {}
    for side, rs in runs.items():
        timed = [(r, i) for r in rs for i in range(1, len(r["step_s"]))]
        if not timed:  # a single step per run: nothing but warm-up steps to report
            timed = [(r, 0) for r in rs]
        step_s = [r["step_s"][i] for r, i in timed]
        phases = {
            k: statistics.median(r["phases"][k][i] for r, i in timed) for k in rs[0]["phases"]
        }
        cpu_s = [r["cpu_s"][i] for r, i in timed]
        summary[side] = {
            "step_s_median": statistics.median(step_s),
            "step_s_all": step_s,
            "cpu_s_median": statistics.median(cpu_s),
            "cpu_s_all": cpu_s,
            "phases_s_median": phases,
            "gen_tokens_per_step": statistics.median(r["gen_tokens"][i] for r, i in timed),
            "notes": rs[0].get("notes", {}),
        }
    p, t = summary["prorl"], summary["trl"]
    ratio = t["step_s_median"] / p["step_s_median"]
    tok_ratio = (p["gen_tokens_per_step"] / p["step_s_median"]) / (
        t["gen_tokens_per_step"] / t["step_s_median"]
    )
    c = job["config"]
    print(
        f"\nmatched: {c['rollout']['prompts_per_step']} prompts x n={c['rollout']['n']}, "
        f"max_new_tokens={c['rollout']['max_new_tokens']}, micro-batch "
        f"{c['algo']['micro_batch_size']}, {args.threads} threads, {args.rounds} runs x "
        f"{args.steps - 1} timed steps each"
    )
    for side in ("prorl", "trl"):
        s = summary[side]
        print(
            f"{side:6s} step {s['step_s_median']:6.1f}s wall, {s['cpu_s_median']:6.1f}s CPU "
            f"({s['gen_tokens_per_step']:.0f} tokens generated per step)"
        )
        for k, v in s["phases_s_median"].items():
            print(f"         {k:28s} {v:6.1f}s  {100 * v / s['step_s_median']:5.1f}%")
    cpu_ratio = t["cpu_s_median"] / p["cpu_s_median"]
    print(
        f"TRL step / prorl step = {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time "
        f"(generated tokens per second ratio {tok_ratio:.2f}x)"
    )
    print(f"load average (1 min) during the runs: {[round(x, 1) for x in loads]}")
    result = {
        "command": "bench/bench_trl.py " + " ".join(sys.argv[1:]),
        "preset": job["preset"],
        "overrides": job["overrides"],
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "prompts": [e["uid"] for e in job["examples"]],
        "prorl": summary["prorl"],
        "trl": summary["trl"],
        "trl_over_prorl_step_time": ratio,
        "trl_over_prorl_cpu_time": cpu_ratio,
        "prorl_over_trl_gen_tokens_per_s": tok_ratio,
        "load_avg_1min": loads,
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


# --- child: prorl ------------------------------------------------------------------------------


def child_prorl(job: dict[str, Any]) -> dict[str, Any]:
    import prorl.train as train_mod
    from prorl.config import load_config
    from prorl.metrics import read_jsonl
    from prorl.runtime import run_training

    run_dir = Path(tempfile.mkdtemp(dir=job["tmp"])) / "run"
    cfg = load_config(job["preset"], [*job["overrides"], f"run_dir={run_dir}"])
    step, cpu = train_mod.rl_step, []

    def timed_step(state: Any) -> dict[str, float]:
        c = time.process_time()  # this process only: the verifier worker is not counted
        out = step(state)
        cpu.append(time.process_time() - c)
        return out

    train_mod.rl_step = timed_step
    run_training(cfg, live=False)
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "time/step_s" in r]
    drawn = [u for r in read_jsonl(run_dir / "samples.jsonl") for u in r["uids"]]
    if drawn != [e["uid"] for e in job["examples"]]:
        raise SystemExit(f"prorl drew other prompts than the job: {drawn}")
    step_s = [r["time/step_s"] for r in rows]
    gen = [r["time/generate_s"] for r in rows]
    score = [r["time/score_s"] for r in rows]
    update = [r.get("time/update_s", 0.0) for r in rows]
    return {
        "step_s": step_s,
        "cpu_s": cpu,
        "gen_tokens": [r["perf/gen_tokens_per_s"] * r["time/generate_s"] for r in rows],
        "phases": {
            "generate": gen,
            "score": score,
            "update (ref + fwd/bwd + optim)": update,
            "other": [s - g - c - u for s, g, c, u in zip(step_s, gen, score, update, strict=True)],
        },
        "reward": [r["train/reward"] for r in rows],
    }


# --- child: TRL --------------------------------------------------------------------------------


def child_trl(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from prorl.tasks import get_task
    from prorl.types import Example, Score

    c = job["config"]
    ro, algo, optim = c["rollout"], c["algo"], c["optim"]
    torch.set_num_threads(job["threads"])
    torch.manual_seed(c["seed"])
    examples = job["examples"]
    tasks = {e["task"]: get_task(e["task"], **e["settings"]) for e in examples}
    by_uid = {e["uid"]: e for e in examples}

    def reward(prompts: list, completions: list, uid: list[str], **_: Any) -> list[float]:
        out = []
        for text, u in zip(completions, uid, strict=True):
            e = by_uid[u]
            content = text[-1]["content"] if isinstance(text, list) else text
            ex = tasks[e["task"]].example(e["index"], "train") if e["index"] is not None else None
            if ex is None or ex.uid != u:
                raise SystemExit(f"cannot rebuild example {u}")
            s = tasks[e["task"]].score(content, ex)
            out.append(float(s.reward if isinstance(s, Score) else s))
        return out

    _ = Example  # the reward function rebuilds prorl Examples through the task
    ds = Dataset.from_list([{"prompt": e["prompt"], "uid": e["uid"]} for e in examples])
    micro = algo["micro_batch_size"]
    per_step = ro["prompts_per_step"] * ro["n"]
    if per_step % micro:
        raise SystemExit("prompts_per_step * n must be a multiple of algo.micro_batch_size")
    args = trl.GRPOConfig(
        output_dir=str(Path(job["tmp"]) / "trl-out"),
        use_cpu=True,
        bf16=bool(c["model"]["bf16"]),
        # prorl's model.compile=true is matched by TRL's own switch (the Trainer compiles
        # the training model; generation runs the unwrapped one, as prorl's sampler does)
        torch_compile={"on": True, "off": False}.get(
            job.get("trl_compile", "follow"), bool(c["model"].get("compile", False))
        ),
        max_steps=job["steps"],
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=per_step // micro,
        steps_per_generation=per_step // micro,  # one generation of the whole batch per step
        num_generations=ro["n"],
        max_completion_length=ro["max_new_tokens"],
        temperature=ro["temperature"],
        top_p=ro["top_p"],
        beta=algo["kl_coef"],
        epsilon=algo["eps_low"],
        epsilon_high=algo["eps_high"],
        loss_type="dapo",  # token-mean over the whole batch, like prorl's token-mean
        scale_rewards="group",  # GRPO: (r - group mean) / group std
        num_iterations=algo["epochs"],
        learning_rate=optim["lr"],
        lr_scheduler_type="constant",
        weight_decay=optim["weight_decay"],
        adam_beta1=optim["beta1"],
        adam_beta2=optim["beta2"],
        max_grad_norm=optim["grad_clip"],
        shuffle_dataset=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
        seed=c["seed"],
        disable_tqdm=True,
    )
    tok = AutoTokenizer.from_pretrained(job["model_dir"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok
    )

    # Timers around TRL's own phases (wrapping the bound methods of this instance).
    spent: dict[str, float] = {}
    gen_tokens = [0]

    def timed(name: str, fn: Any, count_tokens: bool = False) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            out = fn(*a, **k)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
            if count_tokens:
                gen_tokens[0] += sum(len(x) for x in out[0])
            return out

        return wrapper

    token_mismatch = [0]
    tokenize = trainer._tokenize_prompts

    def check_tokens(prompts: list) -> Any:
        out = tokenize(prompts)
        want = {json.dumps(e["prompt"]): e["prompt_ids"] for e in examples}
        token_mismatch[0] += sum(
            list(ids) != want[json.dumps(p)] for p, ids in zip(prompts, out[0], strict=True)
        )
        return out

    trainer._tokenize_prompts = check_tokens  # type: ignore[method-assign]
    trainer._generate_single_turn = timed("generate", trainer._generate_single_turn, True)  # type: ignore[method-assign]
    trainer._calculate_rewards = timed("score", trainer._calculate_rewards)  # type: ignore[method-assign]
    trainer._generate_and_score_completions = timed(  # type: ignore[method-assign]
        "prepare", trainer._generate_and_score_completions
    )

    rows: dict[str, list[float]] = {
        "step": [],
        "cpu": [],
        "generate": [],
        "score": [],
        "prepare": [],
        "tok": [],
    }

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            spent.clear()
            gen_tokens[0] = 0
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            rows["step"].append(time.perf_counter() - self.t)
            rows["cpu"].append(time.process_time() - self.c)
            for name in ("generate", "score", "prepare"):
                rows[name].append(spent.get(name, 0.0))
            rows["tok"].append(float(gen_tokens[0]))

    trainer.add_callback(StepTimer())
    trainer.train()
    prep_other = [
        p - g - s for p, g, s in zip(rows["prepare"], rows["generate"], rows["score"], strict=True)
    ]
    learn = [st - p for st, p in zip(rows["step"], rows["prepare"], strict=True)]
    return {
        "step_s": rows["step"],
        "cpu_s": rows["cpu"],
        "gen_tokens": rows["tok"],
        "phases": {
            "generate": rows["generate"],
            "score": rows["score"],
            "ref/old logprobs + batch prep": prep_other,
            "fwd/bwd + optim": learn,
        },
        "notes": {"trl": trl.__version__, "prompt_token_mismatches": token_mismatch[0]},
    }


if __name__ == "__main__":
    main()
