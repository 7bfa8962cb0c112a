"""Scoring with hard deadlines: the verifier process pool and what its workers rebuild.

Sits above ``prorl.verify`` (the pure verifier functions) and ``prorl.tasks``: a worker
rebuilds a ``ScoreTarget`` by name from either registry. No torch here.
"""

from prorl.scoring.pool import PoolStats, ScoreItem, VerifierExecutor, VerifierPool
from prorl.scoring.worker import ScoreTarget, resolve_scorer, score_one

__all__ = [
    "PoolStats",
    "ScoreItem",
    "ScoreTarget",
    "VerifierExecutor",
    "VerifierPool",
    "resolve_scorer",
    "score_one",
]
