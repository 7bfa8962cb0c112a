"""Synthetic evaluation directories for the evaluation tests (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prorl.evaluate import store


def write_synthetic(
    directory: Path,
    rewards: dict[tuple[str, str], np.ndarray],
    domains: dict[str, str],
    ks: list[int] | None = None,
) -> Path:
    """Store rewards[(model, task)] of shape [P, n] the way ``prorl eval`` does."""
    models = list(dict.fromkeys(m for m, _ in rewards))
    tasks = list(dict.fromkeys(t for _, t in rewards))
    n = next(iter(rewards.values())).shape[1]
    store.write_manifest(
        directory,
        {
            "version": store.FORMAT_VERSION,
            "n": n,
            "ks": ks,
            "split": "test",
            "seed": 0,
            "threshold": 1.0,
            "sampling": {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 16},
            "models": [{"label": m, "spec": f"spec-of-{m}"} for m in models],
            "tasks": [{"name": t, "domain": domains[t]} for t in tasks],
        },
    )
    for (m, t), r in rewards.items():
        rows = [
            {
                "index": i,
                "uid": f"{t}:test:0:{i}",
                "task": t,
                "question": f"question {i} of {t}",
                "samples": [
                    {"text": "x", "num_tokens": 3, "finish_reason": "stop", "reward": float(v)}
                    for v in row
                ],
            }
            for i, row in enumerate(r)
        ]
        store.append_rows(store.results_path(directory, m, t), rows)
    return directory
