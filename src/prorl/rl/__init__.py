"""Pure tensor maths of the RL step: advantages, policy losses, KL, filtering, entropy, shaping.

No model code lives here; every function takes tensors and returns tensors (losses return
``(loss, stats)`` with ``stats`` a flat dict of python floats). Formulas and the choices the
papers leave open are written down in ``docs/rl-maths.md``.
"""

from prorl.rl.advantages import (
    ADVANTAGES,
    compute_advantages,
    drgrpo_advantages,
    grpo_advantages,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
)
from prorl.rl.entropy import chunked_entropy, entropy_from_logits, selective_log_softmax
from prorl.rl.filtering import DynamicBatch, informative_groups, is_informative
from prorl.rl.kl import KL_ESTIMATORS, kl_penalty
from prorl.rl.losses import (
    AGG_MODES,
    EXTRA_STATS,
    POLICY_LOSSES,
    PolicyLoss,
    aggregate,
    cispo_loss,
    gspo_loss,
    masked_mean,
    policy_loss,
    truncated_is_weights,
)
from prorl.rl.minibatch import MicroBatch, MiniBatch, micro_batches, plan_minibatches, plan_update
from prorl.rl.objective import rl_objective
from prorl.rl.shaping import (
    cosine_eta,
    format_credit,
    length_penalty_on,
    overlong_rewards,
    shape_rewards,
)

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "EXTRA_STATS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "PolicyLoss",
    "DynamicBatch",
    "MicroBatch",
    "MiniBatch",
    "aggregate",
    "chunked_entropy",
    "cispo_loss",
    "compute_advantages",
    "cosine_eta",
    "drgrpo_advantages",
    "entropy_from_logits",
    "grpo_advantages",
    "gspo_loss",
    "informative_groups",
    "is_informative",
    "kl_penalty",
    "length_penalty_on",
    "masked_mean",
    "micro_batches",
    "overlong_rewards",
    "policy_loss",
    "reinforce_pp_baseline_advantages",
    "rl_objective",
    "rloo_advantages",
    "selective_log_softmax",
    "shape_rewards",
    "plan_minibatches",
    "plan_update",
    "format_credit",
    "truncated_is_weights",
]
