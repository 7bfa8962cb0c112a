"""Configuration: frozen dataclasses by concern, YAML presets, ``a.b=value`` overrides.

A preset only overrides defaults. Every key is validated when the config is built, with a
message naming the key, so a typo fails before anything is written. No torch here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESETS_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    pass


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    weight: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.weight > 0, "weight", f"task {self.name!r} needs a positive weight")


MODEL_DTYPES = ("float32", "bfloat16", "float16")
MASTER_DTYPE = "float32"  # the trainer's policy and AdamW state, whatever model.dtype says


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2-135m"  # embedded name, HF folder, .gguf file or run directory
    # The trainer's policy - master weights and so AdamW's state - is always float32,
    # whatever this says (docs/recipe.md#precision): a bf16 Adam step at lr ~1e-6 rounds
    # away almost every update. model.dtype is the dtype of the frozen copies: the KL
    # reference, Ray rollout workers' policies and vLLM's engine under rollout.vllm_dtype
    # auto. bfloat16 halves their memory; compute precision is model.bf16's.
    dtype: str = "float32"
    bf16: bool = True  # bf16 autocast in the trainer's passes (on CPU: with bf16 hardware only)
    gradient_checkpointing: bool = False
    # torch.compile (inductor) the trainer's passes: fuses the casts and elementwise ops
    # around the matmuls. One-off compile of minutes; see docs/benchmarks.md for the gain.
    compile: bool = False
    # where the trainer computes: auto (this rank's GPU when there is one; under Ray, GPUs
    # exactly when scale.gpus_per_worker > 0), cpu, cuda (GPU number LOCAL_RANK) or cuda:N
    device: str = "auto"

    def __post_init__(self) -> None:
        check_device(self.device, "model.device")
        _check(self.dtype in MODEL_DTYPES, "model.dtype", "|".join(MODEL_DTYPES))


def check_device(setting: str, key: str) -> None:
    """A device setting (``model.device``, ``prorl eval --device``): auto, cpu, cuda, cuda:N."""
    kind, _, index = setting.partition(":")
    _check(
        setting in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit()),
        key,
        "choose auto, cpu, cuda or cuda:N",
    )


@dataclass(frozen=True)
class DataConfig:
    tasks: tuple[TaskSpec, ...] = (TaskSpec("rg/leg_counting"),)
    val_tasks: tuple[TaskSpec, ...] = ()  # empty: validate on the training tasks' val split
    val_problems: int = 16  # held-out problems per validation task
    # before the model loads, every task must score its reference answer 1 and trivial
    # responses (empty, format-only, junk, the prompt echoed) 0 on a few problems
    # (prorl.tasks.selfcheck): strict stops the run, exclude leaves failing tasks out, skip
    self_check: str = "strict"

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "data.tasks", "at least one task is needed")
        _check(
            self.self_check in ("strict", "exclude", "skip"),
            "data.self_check",
            "choose strict, exclude or skip",
        )
        _check(self.val_problems >= 0, "data.val_problems", "must be >= 0")


@dataclass(frozen=True)
class RolloutConfig:
    sampler: str = "hf"
    prompts_per_step: int = 8  # groups in the training batch
    n: int = 8  # samples per prompt (group size)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 64  # sequences generated together
    # bf16 autocast in decoding: measured 3x slower than fp32 for SmolLM2-135M on this CPU
    # (one-token steps are dominated by dtype casts), so off by default.
    bf16: bool = False
    dynamic_sampling: bool = True  # drop groups whose rewards are all equal
    max_rounds: int = 3  # generation rounds to refill the batch after filtering
    # vLLM engine (rollout.sampler=vllm; docs/vllm.md). dtype auto: the policy's own dtype.
    vllm_dtype: str = "auto"
    vllm_kv_cache_gb: float = 1.0  # CPU: memory reserved for the KV cache
    vllm_gpu_memory: float = 0.4  # GPU: share of GPU memory for weights + KV cache
    vllm_sleep: bool = False  # GPU: free the engine's memory while the trainer updates
    # Asynchronous rollouts (docs/async.md): step t is drawn from the policy of step
    # t - max_staleness by a rollout thread while the trainer updates; 0: synchronous.
    max_staleness: int = 0
    # What a reset does to steps drawn ahead: keep (a reset changes the reference and
    # AdamW, not the policy that drew them) | redraw (the same prompts, from the policy now)
    on_reset: str = "keep"

    def __post_init__(self) -> None:
        _check(self.sampler in ("hf", "vllm"), "rollout.sampler", "choose hf or vllm")
        vllm_dtypes = ("auto", "float32", "bfloat16", "float16")
        _check(self.vllm_dtype in vllm_dtypes, "rollout.vllm_dtype", "|".join(vllm_dtypes))
        _check(self.vllm_kv_cache_gb > 0, "rollout.vllm_kv_cache_gb", "must be > 0")
        _check(0 < self.vllm_gpu_memory <= 1, "rollout.vllm_gpu_memory", "must be in (0, 1]")
        _check(self.prompts_per_step >= 1, "rollout.prompts_per_step", "must be >= 1")
        _check(self.n >= 2, "rollout.n", "GRPO needs at least 2 samples per prompt")
        _check(self.temperature > 0, "rollout.temperature", "must be > 0")
        _check(0 < self.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
        _check(self.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
        _check(self.batch_size >= 1, "rollout.batch_size", "must be >= 1")
        _check(self.max_rounds >= 1, "rollout.max_rounds", "must be >= 1")
        _check(self.max_staleness >= 0, "rollout.max_staleness", "must be >= 0 (0: synchronous)")
        _check(self.on_reset in ("keep", "redraw"), "rollout.on_reset", "choose keep or redraw")


POLICY_LOSSES = ("ppo", "gspo", "cispo")
ADVANTAGES = ("grpo", "reinforce++-baseline", "drgrpo", "rloo")


def keeps_reference(kl_coef: float, track_kl: bool) -> bool:
    """Whether a run keeps a reference policy: for the KL term, or to measure the KL alone.

    A plain function too, so a checkpoint's saved (flattened) config can be asked the same."""
    return kl_coef > 0 or track_kl


@dataclass(frozen=True)
class AlgoConfig:
    advantage: str = "grpo"  # grpo | reinforce++-baseline | drgrpo | rloo
    # ppo: token-level clipped surrogate (GRPO/DAPO); gspo: clipped sequence ratio; cispo:
    # REINFORCE with a clipped importance weight (docs/rl-maths.md, "Policy losses")
    policy_loss: str = "ppo"
    # The clip bounds of the loss's ratio: the token ratio (ppo), the sequence ratio (gspo:
    # set ~3e-4 / 4e-4), the importance weight (cispo: eps_low >= 1 drops the lower bound).
    eps_low: float = 0.2
    eps_high: float = 0.4  # clip-higher (ProRL v1 0.4; v2 0.28)
    loss_agg: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
    kl_coef: float = 1e-4
    kl_kind: str = "k3"  # k1 | k2 | k3
    # keep a reference and log policy/kl even with kl_coef 0: how far a run without the
    # KL term drifts (an ablation's curves), for one more forward pass per micro-batch
    track_kl: bool = False
    mini_batches: int = 1  # optimizer steps per rollout batch
    micro_batch_size: int = 8  # sequences per forward/backward (gradient accumulation)
    epochs: int = 1  # passes over the rollout batch
    old_logprobs: str = "trainer"  # trainer: recompute; sampler: use the rollout engine's
    # ProRL v2 truncated importance sampling between the rollout engine's and the trainer's
    # log-probs: weight clamp(pi_old_trainer / pi_sampler, is_low, is_high) per token;
    # is_low 0 gives the one-sided min(ratio, is_high). docs/vllm.md.
    truncated_is: bool = False
    is_low: float = 0.5
    is_high: float = 5.0

    def __post_init__(self) -> None:
        adv = ", ".join(ADVANTAGES)
        _check(self.advantage in ADVANTAGES, "algo.advantage", f"choose one of {adv}")
        losses = ", ".join(POLICY_LOSSES)
        _check(self.policy_loss in POLICY_LOSSES, "algo.policy_loss", f"choose one of {losses}")
        aggs = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
        _check(self.loss_agg in aggs, "algo.loss_agg", f"choose one of {', '.join(aggs)}")
        _check(self.kl_kind in ("k1", "k2", "k3"), "algo.kl_kind", "choose k1, k2 or k3")
        if self.policy_loss == "cispo":  # a weight's lower bound 1 - eps_low <= 0: none
            _check(self.eps_low >= 0, "algo.eps_low", "must be >= 0")
        else:  # a clipped ratio must stay positive
            _check(0 <= self.eps_low < 1, "algo.eps_low", "must be in [0, 1)")
        _check(self.eps_high >= 0, "algo.eps_high", "must be >= 0")
        _check(self.kl_coef >= 0, "algo.kl_coef", "must be >= 0")
        _check(self.mini_batches >= 1, "algo.mini_batches", "must be >= 1")
        _check(self.micro_batch_size >= 1, "algo.micro_batch_size", "must be >= 1")
        _check(self.epochs >= 1, "algo.epochs", "must be >= 1")
        _check(self.old_logprobs in ("trainer", "sampler"), "algo.old_logprobs", "trainer|sampler")
        _check(
            0 <= self.is_low <= 1 <= self.is_high, "algo.is_low", "need 0 <= is_low <= 1 <= is_high"
        )
        _check(
            not self.truncated_is or self.old_logprobs == "trainer",
            "algo.truncated_is",
            "needs algo.old_logprobs=trainer (with sampler the ratio already uses its log-probs)",
        )

    @property
    def keeps_reference(self) -> bool:
        """A reference policy is kept: for the KL term, or to measure the KL alone."""
        return keeps_reference(self.kl_coef, self.track_kl)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0  # max global grad norm; 0 disables

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "must be > 0")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        _check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0")


@dataclass(frozen=True)
class ResetConfig:
    """Reference resets; every trigger is off at 0 and any one that fires resets (see
    ``prorl.resets``)."""

    every: int = 0  # reset the reference policy every N steps; 0: never
    reset_optimizer: bool = True  # ProRL v1 re-initialises AdamW; v2 keeps it
    target: str = "policy"  # new reference: policy (current) | best (best kept checkpoint)
    patience: int = 0  # validations without a new best before a reset
    drop: float = 0.0  # validation fallen more than this below its best
    eval_metric: str = "eval/pass@1"  # success rate over the validation tasks
    eval_blend: dict[str, float] = field(default_factory=dict)  # eval key -> weight
    kl_max: float = 0.0  # policy/kl above this
    kl_share_max: float = 0.0  # KL term's share of the loss above this (0-1)
    entropy_min: float = 0.0  # policy/entropy below this
    cooldown: int = 0  # steps after a reset during which metric triggers are ignored

    def __post_init__(self) -> None:
        _check(self.every >= 0, "reset.every", "must be >= 0")
        _check(self.target in ("policy", "best"), "reset.target", "choose policy or best")
        _check(self.patience >= 0, "reset.patience", "must be >= 0")
        _check(self.drop >= 0, "reset.drop", "must be >= 0")
        _check(0 <= self.kl_share_max < 1, "reset.kl_share_max", "must be in [0, 1)")
        _check(self.cooldown >= 0, "reset.cooldown", "must be >= 0")
        _check(all(w > 0 for w in self.eval_blend.values()), "reset.eval_blend", "weights > 0")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 10  # save every N steps; 0: only at the end (and on SIGINT/SIGTERM)
    keep_last: int = 2  # newest complete checkpoints kept; older ones are deleted
    milestones_every: int = 0  # also keep every checkpoint whose step is a multiple; 0: none

    def __post_init__(self) -> None:
        _check(self.every >= 0, "checkpoint.every", "must be >= 0")
        _check(self.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
        _check(self.milestones_every >= 0, "checkpoint.milestones_every", "must be >= 0")


@dataclass(frozen=True)
class HealthCheck:
    metric: str
    min: float | None = None  # alarm when the value is below this
    max: float | None = None  # alarm when the value is above this
    action: str = "warn"  # warn | reset | stop (checkpoint, then stop cleanly)
    patience: int = 1  # consecutive out-of-bounds steps before the alarm

    def __post_init__(self) -> None:
        what = f"check of {self.metric!r}"
        _check(self.min is not None or self.max is not None, "min", f"{what}: give min or max")
        _check(self.action in ("warn", "reset", "stop"), "action", f"{what}: warn|reset|stop")
        _check(self.patience >= 1, "patience", f"{what}: must be >= 1")


# Warnings only by default: they flag the failure modes of long RL runs (entropy collapse,
# runaway KL, a batch that no longer learns, responses hitting the cap, verifier trouble)
# without changing training. ``response/length_mean`` has no default: it is task-specific.
DEFAULT_HEALTH = (
    HealthCheck("policy/entropy", min=0.05, patience=3),
    HealthCheck("policy/kl", max=1.0, patience=3),
    HealthCheck("policy/clipfrac", max=0.3, patience=3),
    HealthCheck("filter/kept_frac", min=0.05, patience=5),
    HealthCheck("response/truncated_frac", max=0.5, patience=3),
    HealthCheck("optim/grad_norm", max=1000.0),
    HealthCheck("verify/timeouts", max=8.0),
    HealthCheck("verify/infra_errors", max=0.0),
)


@dataclass(frozen=True)
class HealthConfig:
    checks: tuple[HealthCheck, ...] = DEFAULT_HEALTH


@dataclass(frozen=True)
class EvalConfig:
    every: int = 10  # validate every N steps (and before and after training); 0: ends only
    n: int = 4  # samples per held-out problem
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 0  # 0: same as rollout.max_new_tokens

    def __post_init__(self) -> None:
        _check(self.every >= 0, "eval.every", "must be >= 0")
        _check(self.n >= 1, "eval.n", "must be >= 1")


@dataclass(frozen=True)
class VerifyConfig:
    workers: int = 2  # verifier processes; 0 verifies in-process (debugging only)
    timeout_s: float = 10.0  # hard deadline per item

    def __post_init__(self) -> None:
        _check(self.workers >= 0, "verify.workers", "must be >= 0")
        _check(self.timeout_s > 0, "verify.timeout_s", "must be > 0")


@dataclass(frozen=True)
class ScaleConfig:
    """Where rollouts, verification and the learner run (docs/scaling.md). ``local``: this
    process (several learner processes only under torchrun); ``ray``: rollout and verifier
    workers as Ray actors, learner ranks beyond this process as Ray actors too."""

    backend: str = "local"  # local | ray
    address: str | None = None  # Ray cluster address ("auto", "ray://host:10001"); None: local
    rollout_workers: int = 2  # Ray actors, each owning a Sampler (rollout.sampler: hf | vllm)
    verifier_workers: int = 2  # Ray actors, each owning a verifier pool of one process
    learner_procs: int = 1  # torch.distributed ranks (this process is rank 0)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # rollout workers and learner ranks; NCCL when > 0
    placement: str = "PACK"  # Ray placement group strategy: PACK | SPREAD | STRICT_PACK | ...
    timeout_s: float = 600.0  # a collective waiting longer than this means a learner is gone
    # ddp: every rank holds the whole policy, reference and AdamW state; fsdp2: they are
    # sharded across the learner ranks (torch fully_shard per decoder layer; needs Ray)
    learner_strategy: str = "ddp"

    def __post_init__(self) -> None:
        _check(self.backend in ("local", "ray"), "scale.backend", "choose local or ray")
        _check(self.rollout_workers >= 1, "scale.rollout_workers", "must be >= 1")
        _check(self.verifier_workers >= 1, "scale.verifier_workers", "must be >= 1")
        _check(self.learner_procs >= 1, "scale.learner_procs", "must be >= 1")
        _check(self.cpus_per_worker > 0, "scale.cpus_per_worker", "must be > 0")
        _check(self.gpus_per_worker >= 0, "scale.gpus_per_worker", "must be >= 0")
        strategies = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
        _check(self.placement in strategies, "scale.placement", f"one of {', '.join(strategies)}")
        _check(self.timeout_s > 0, "scale.timeout_s", "must be > 0")
        _check(
            self.learner_strategy in ("ddp", "fsdp2"),
            "scale.learner_strategy",
            "choose ddp or fsdp2",
        )
        _check(
            self.backend == "ray" or self.learner_procs == 1,
            "scale.learner_procs",
            "needs scale.backend=ray (or launch with torchrun: docs/scaling.md)",
        )


@dataclass(frozen=True)
class ShapingConfig:
    """Reward shaping (``prorl.rl.shaping``): training rewards only, never a task's score;
    off by default, per-stage."""

    # a formatted but wrong answer's training reward is raised to this; logged as
    # train/format_credit (a bootstrap for models that rarely use the answer format)
    format_reward: float = 0.0
    overlong: str = "none"  # none | zero | penalty: responses cut at max_new_tokens
    overlong_penalty: float = 1.0  # penalty: a truncated response's reward is -overlong_penalty
    length_penalty: float = 0.0  # lambda of ProRL v2's cosine length penalty; 0: off
    length_eta_min: float = -1.0  # eta at the length cap
    length_eta_max: float = 0.0  # eta at length 0
    length_penalty_on_steps: int = 0  # cycle: on for this many steps, then ...; 0: always on
    length_penalty_off_steps: int = 0  # ... off for this many (counted from the stage start)

    def __post_init__(self) -> None:
        _check(0 <= self.format_reward < 1, "shaping.format_reward", "must be in [0, 1)")
        modes = ("none", "zero", "penalty")
        _check(self.overlong in modes, "shaping.overlong", f"choose one of {', '.join(modes)}")
        _check(self.overlong_penalty >= 0, "shaping.overlong_penalty", "must be >= 0")
        _check(self.length_penalty >= 0, "shaping.length_penalty", "must be >= 0")
        _check(self.length_penalty_on_steps >= 0, "shaping.length_penalty_on_steps", "must be >= 0")
        _check(
            self.length_penalty_off_steps >= 0, "shaping.length_penalty_off_steps", "must be >= 0"
        )
        _check(
            not self.length_penalty_off_steps or self.length_penalty_on_steps > 0,
            "shaping.length_penalty_off_steps",
            "needs length_penalty_on_steps > 0 (the on phase)",
        )


WANDB_MODES = ("offline", "online")


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a slow import for wandb)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blanked-out (sys.modules[name] = None) entry
        return False


@dataclass(frozen=True)
class LoggingConfig:
    """Optional metric sinks beside ``metrics.jsonl``, ``events.jsonl`` and TensorBoard
    (docs/logging.md)."""

    # Weights & Biases: the same metrics (keys and steps), the resolved config and the events
    wandb: bool = False
    # offline: written under wandb_dir only, nothing needs the network (``wandb sync`` uploads
    # later); online: streamed to the W&B server (needs ``wandb login``)
    wandb_mode: str = "offline"
    wandb_project: str = "prorl"
    wandb_entity: str = ""  # empty: the account's default entity
    wandb_name: str = ""  # the W&B run's name; empty: the run directory's name
    wandb_dir: str = ""  # where wandb/ goes; empty: $WANDB_DIR, else the run directory

    def __post_init__(self) -> None:
        modes = ", ".join(WANDB_MODES)
        _check(self.wandb_mode in WANDB_MODES, "logging.wandb_mode", f"choose one of {modes}")
        # refused when the config is built: before a model loads or a run directory exists
        _check(
            not self.wandb or _installed("wandb"),
            "logging.wandb",
            "needs the wandb package: pip install 'prorl[wandb]' (or set logging.wandb=false)",
        )


# What a stage may change, by section (None: every key of the section). The rest of the
# config (model, seed, batch shape, checkpoints...) is fixed for the whole run.
STAGE_KEYS: dict[str, tuple[str, ...] | None] = {
    "data": ("tasks",),
    "rollout": ("max_new_tokens", "n", "temperature", "top_p"),
    "algo": ("eps_low", "eps_high", "kl_coef"),
    "optim": ("lr",),
    "shaping": None,
}


@dataclass(frozen=True)
class StageConfig:
    """One stage of a run (``prorl.stages``): a length and overrides of the base config."""

    name: str = ""
    steps: int = 0  # length in steps; or
    until_step: int = 0  # the step count at which it ends; neither (last stage): until ``steps``
    reset_optimizer: bool | None = None  # at its start; None: reset.reset_optimizer
    data: dict[str, Any] = field(default_factory=dict)
    rollout: dict[str, Any] = field(default_factory=dict)
    algo: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    shaping: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "steps", "must be >= 0")
        _check(self.until_step >= 0, "until_step", "must be >= 0")
        _check(not (self.steps and self.until_step), "steps", "give steps or until_step, not both")
        for section, allowed in STAGE_KEYS.items():
            for key in getattr(self, section):
                _check(
                    allowed is None or key in allowed,
                    f"{section}.{key}",
                    "a stage cannot change this; stages can change "
                    + ", ".join(f"{s}.{k}" for s, ks in STAGE_KEYS.items() for k in ks or ("*",)),
                )

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Non-empty sections: ``{"rollout": {"n": 32}, ...}``."""
        return {s: dict(getattr(self, s)) for s in STAGE_KEYS if getattr(self, s)}


@dataclass(frozen=True)
class Config:
    seed: int = 0
    steps: int = 20
    run_dir: str = "runs/default"
    tensorboard: bool = True
    threads: int = 0  # torch intra-op threads; 0: torch's default
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reset: ResetConfig = field(default_factory=ResetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stages: tuple[StageConfig, ...] = ()  # empty: one stage, the config itself

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "steps", "must be >= 0")
        for i, stage in enumerate(self.stages):  # a bad value in stage 3 fails at startup
            for section, values in stage.overrides().items():
                stage_section(self, section, values, f"stages[{i}].")
            kl = stage.algo.get("kl_coef", self.algo.kl_coef)
            _check(
                self.algo.keeps_reference or not kl,
                f"stages[{i}].algo.kl_coef",
                "needs algo.kl_coef > 0 (or algo.track_kl) in the base config (else no "
                "reference model is kept)",
            )
        stage_ends(self)  # lengths in order, and ``steps`` equal to their sum
        if self.rollout.max_staleness > 0:
            check_async(self)


def check_async(cfg: Config) -> None:
    """Asynchronous rollouts need a correction for the lag, and one learner process."""
    a = cfg.algo
    _check(
        a.truncated_is or a.old_logprobs == "sampler",
        "rollout.max_staleness",
        f"{cfg.rollout.max_staleness} draws samples from an older policy; correct for it with "
        "algo.truncated_is=true (weights pi_old / pi_sampler, truncated) or "
        "algo.old_logprobs=sampler (the ratio starts from the sampler's log-probs)",
    )
    _check(
        not cfg.rollout.vllm_sleep,
        "rollout.vllm_sleep",
        "frees the engine's memory while the trainer updates, but with rollout.max_staleness "
        "> 0 the engine generates during the update; use one or the other",
    )
    _check(
        cfg.scale.learner_procs == 1,
        "rollout.max_staleness",
        "is not supported with several learner processes (scale.learner_procs > 1) yet; "
        "use max_staleness=0 there",
    )


def stage_section(cfg: Config, section: str, values: dict[str, Any], where: str = "") -> Any:
    """``cfg``'s ``section`` with a stage's ``values`` applied through the same parsing and
    checks as the base config; errors name the key as ``{where}section.key``."""
    merged = {**to_dict(getattr(cfg, section)), **values}
    try:
        return from_dict(type(getattr(cfg, section)), merged, f"{section}.")
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None


def stage_ends(cfg: Config) -> list[int]:
    """The step count at which each stage ends (the last one at ``cfg.steps``); checks that
    lengths are given and increase, and that ``steps`` equals their total when every stage
    has a length."""
    ends: list[int] = []
    for i, stage in enumerate(cfg.stages):
        start = ends[-1] if ends else 0
        last = i == len(cfg.stages) - 1
        if stage.steps:
            end = start + stage.steps
        elif stage.until_step:
            end = stage.until_step
            _check(end > start, f"stages[{i}].until_step", f"must be after step {start}")
        else:
            _check(last, f"stages[{i}]", "give steps (its length) or until_step (its end)")
            _check(
                cfg.steps > start,
                "steps",
                f"{cfg.steps} leaves nothing for the open last stage (it starts at step {start})",
            )
            end = cfg.steps
        if last:
            _check(
                cfg.steps == end,
                "steps",
                f"{cfg.steps}, but the stages end at step {end}; leave steps out (the stages "
                "set it) or leave the last stage's length out (it then runs until steps)",
            )
        ends.append(end)
    return ends


# --- building configs from dicts, presets and overrides -------------------------------------


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking keys and value types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(
                f"{prefix}{key}: unknown key; known keys here: {', '.join(sorted(names))}"
            )
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(
            f"{prefix}{e}" if prefix and not str(e).startswith(prefix) else str(e)
        ) from None
    except TypeError as e:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from e


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if tp is TaskSpec and isinstance(value, str):
            return _task_from_str(value, key)
        return from_dict(tp, value, key + ".")  # type: ignore[arg-type]
    if origin is tuple:
        (inner, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str) and inner is TaskSpec:
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or len(arms) != 1:
            return value
        return _coerce(arms[0], value, key)  # ``float | None``: check (and parse) the float
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _task_from_str(text: str, key: str) -> TaskSpec:
    """``name`` or ``name:weight`` (the command-line shorthand)."""
    name, _, weight = text.strip().partition(":")
    try:
        return TaskSpec(name, float(weight) if weight else 1.0)
    except ValueError as e:
        raise ConfigError(f"{key}: bad task {text!r} (use name or name:weight)") from e


def to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple | list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if name_or_path in list_presets():  # a name, even one with a dot (r1-distill-1.5b)
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"preset: {name_or_path!r} not found; presets: {', '.join(list_presets())} "
            "(or give a path to a YAML file)"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"preset: {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"preset: {path} must hold a mapping at the top level")
    return data


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to a nested dict in place."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected key=value, e.g. optim.lr=1e-6")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: could not parse value {raw!r}: {e}") from e
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    node[parts[-1]] = value


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    data = read_preset(preset) if preset else {}
    for ov in overrides:
        apply_override(data, ov)
    _steps_from_stages(data)
    cfg: Config = from_dict(Config, data)
    return cfg


def _steps_from_stages(data: dict[str, Any]) -> None:
    """``steps`` left out with stages that all have a length: the run is their total."""
    stages = data.get("stages")
    if "steps" in data or not isinstance(stages, list) or not stages:
        return
    end = 0
    for st in stages:
        if not isinstance(st, dict):
            return  # from_dict names the problem
        steps, until = st.get("steps") or 0, st.get("until_step") or 0
        if not isinstance(steps, int) or not isinstance(until, int) or not (steps or until):
            return
        end = end + steps if steps else until
    data["steps"] = end


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The resolved ``config.yaml`` of an existing run, with ``overrides`` applied on top
    (``prorl train --resume RUN_DIR steps=400``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"resume: {run_dir} holds no config.yaml; is it a prorl run directory?")
    data = read_preset(str(path))
    for ov in overrides:
        apply_override(data, ov)
    cfg: Config = from_dict(Config, data)
    return cfg
