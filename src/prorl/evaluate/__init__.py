"""Measuring the reasoning boundary: pass@k estimation, analysis, plots and reports.

Importing this package (and ``passk``, ``analysis``, ``plots``, ``report``) never imports
torch; only ``runner`` loads models and samplers, and it does so inside its functions.
"""

from prorl.evaluate.passk import (
    DEFAULT_THRESHOLD,
    default_ks,
    parse_ks,
    pass_at_k,
    pass_at_k_matrix,
    successes,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "default_ks",
    "parse_ks",
    "pass_at_k",
    "pass_at_k_matrix",
    "successes",
]
