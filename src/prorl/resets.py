"""When to reset the reference policy: pure logic over the metric trace (no torch).

A ``ResetPolicy`` sees each step's metrics (``observe``) and answers with a ``ResetDecision``
(why, and the metrics that caused it) or None. Triggers combine: any one that fires resets.

- every N steps (``reset.every``);
- validation plateau: the validation score has not improved on its best for ``patience``
  evaluations, or has fallen more than ``drop`` below it. The score is ``eval_metric``
  (default ``eval/pass@1``, the success rate) or, when ``eval_blend`` is set, the
  weighted mean of those keys (e.g. ``{eval/math/pass@1: 2, eval/code/pass@1: 1}``). The trace restarts after a reset;
- KL: ``policy/kl`` above ``kl_max``, or the KL term's share of the loss
  (``kl_coef * kl / (|loss/pg| + kl_coef * kl)``) above ``kl_share_max``;
- entropy: ``policy/entropy`` below ``entropy_min``.

Metric-driven triggers wait ``cooldown`` steps after any reset, so a slow-moving metric
does not reset on every step. The state (trace, best, last reset) is checkpointed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prorl.config import ResetConfig


@dataclass(frozen=True)
class ResetDecision:
    reasons: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)  # the values that triggered it
    best_step: int | None = None  # step of the best validation since the previous reset

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


class ResetPolicy:
    def __init__(self, cfg: ResetConfig, kl_coef: float = 0.0) -> None:
        self.cfg = cfg
        self.kl_coef = kl_coef
        self.last_reset = 0  # step of the last reset (0: the start)
        self.best: float | None = None  # best validation score since the last reset
        self.best_step: int | None = None
        self.since_best = 0  # evaluations since the best one

    def eval_score(self, metrics: dict[str, Any]) -> float | None:
        """The validation score this policy tracks, or None when the step did not validate."""
        blend = self.cfg.eval_blend
        if blend:
            if not all(k in metrics for k in blend):
                return None
            total = sum(blend.values())
            return sum(float(metrics[k]) * w for k, w in blend.items()) / total
        value = metrics.get(self.cfg.eval_metric)
        return None if value is None else float(value)

    def observe(self, step: int, metrics: dict[str, Any]) -> ResetDecision | None:
        """Feed the metrics of ``step`` (after its validation, if any); say whether to reset."""
        reasons: list[str] = []
        cause: dict[str, float] = {}
        c = self.cfg
        if c.every and step % c.every == 0:
            reasons.append(f"every {c.every} steps")
        self._track_eval(step, metrics, reasons, cause)
        if step - self.last_reset > c.cooldown:
            self._check_thresholds(metrics, reasons, cause)
        if not reasons:
            return None
        decision = ResetDecision(tuple(reasons), cause, self.best_step)
        self.restart(step)
        return decision

    def restart(self, step: int) -> None:
        """Record a reset at ``step`` (also one decided elsewhere, e.g. a health alarm)."""
        self.last_reset = step
        self.best, self.best_step, self.since_best = None, None, 0

    def _track_eval(
        self, step: int, metrics: dict[str, Any], reasons: list[str], cause: dict[str, float]
    ) -> None:
        c = self.cfg
        score = self.eval_score(metrics)
        if score is None:
            return
        if self.best is None or score > self.best:
            self.best, self.best_step, self.since_best = score, step, 0
            return
        self.since_best += 1
        if step - self.last_reset <= c.cooldown:
            return
        if c.patience and self.since_best >= c.patience:
            reasons.append(f"validation not improved for {self.since_best} evaluations")
            cause.update({"eval/score": score, "eval/best": self.best})
        if c.drop and self.best - score > c.drop:
            reasons.append(f"validation fell {self.best - score:.4g} below its best")
            cause.update({"eval/score": score, "eval/best": self.best})

    def _check_thresholds(
        self, metrics: dict[str, Any], reasons: list[str], cause: dict[str, float]
    ) -> None:
        c = self.cfg
        kl = metrics.get("policy/kl")
        if c.kl_max and kl is not None and kl > c.kl_max:
            reasons.append(f"policy/kl {kl:.4g} > {c.kl_max:g}")
            cause["policy/kl"] = float(kl)
        pg = metrics.get("loss/pg")
        if c.kl_share_max and kl is not None and pg is not None and self.kl_coef > 0:
            term = self.kl_coef * kl
            share = term / (abs(pg) + term) if term > 0 else 0.0
            if share > c.kl_share_max:
                reasons.append(f"KL share of the loss {share:.3g} > {c.kl_share_max:g}")
                cause.update({"policy/kl": float(kl), "loss/pg": float(pg), "kl_share": share})
        ent = metrics.get("policy/entropy")
        if c.entropy_min and ent is not None and ent < c.entropy_min:
            reasons.append(f"policy/entropy {ent:.4g} < {c.entropy_min:g}")
            cause["policy/entropy"] = float(ent)

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_reset": self.last_reset,
            "best": self.best,
            "best_step": self.best_step,
            "since_best": self.since_best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_reset = int(state["last_reset"])
        self.best = state["best"]
        self.best_step = state["best_step"]
        self.since_best = int(state["since_best"])
