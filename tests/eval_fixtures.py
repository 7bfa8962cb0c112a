"""Synthetic evaluation directories for the evaluation tests (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from prorl.evaluate import store


def write_synthetic(
    directory: Path,
    rewards: dict[tuple[str, str], np.ndarray],
    domains: dict[str, str],
    ks: list[int] | None = None,
    *,
    floors: dict[tuple[str, str], list[dict[str, float]]] | None = None,
    formatted: dict[tuple[str, str], list[list[bool | None]]] | None = None,
    specs: dict[str, str] | None = None,
    texts: dict[tuple[str, str], list[list[str]]] | None = None,
    answers: dict[str, list[str]] | None = None,
) -> Path:
    """Store rewards[(model, task)] of shape [P, n] the way ``prorl eval`` does.

    ``floors[(model, task)]``: one ``{"empty": r, "format": r, "junk": r, "echo": r}`` per
    problem (stored as the row's ``"floor"``); ``formatted[(model, task)]``: [P, n] sample
    flags. Pairs left out are written as before either existed (no such keys).
    ``specs``: the manifest's source spec per model (default ``spec-of-<model>``);
    ``texts[(model, task)]``: [P, n] response texts (default "x"); ``answers[task]``: each
    problem's reference answer (stored as the row's ``"answer"``)."""
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
            "models": [{"label": m, "spec": (specs or {}).get(m, f"spec-of-{m}")} for m in models],
            "tasks": [{"name": t, "domain": domains[t]} for t in tasks],
        },
    )
    for (m, t), r in rewards.items():
        rows: list[dict[str, Any]] = []
        for i, row in enumerate(r):
            samples: list[dict[str, Any]] = [
                {"text": "x", "num_tokens": 3, "finish_reason": "stop", "reward": float(v)}
                for v in row
            ]
            if texts is not None and (m, t) in texts:
                for sample, text in zip(samples, texts[(m, t)][i], strict=True):
                    sample["text"] = text
            if formatted is not None and (m, t) in formatted:
                for sample, flag in zip(samples, formatted[(m, t)][i], strict=True):
                    sample["formatted"] = flag
            out: dict[str, Any] = {
                "index": i,
                "uid": f"{t}:test:0:{i}",
                "task": t,
                "question": f"question {i} of {t}",
                "samples": samples,
            }
            if answers is not None and t in answers:
                out["answer"] = answers[t][i]
            if floors is not None and (m, t) in floors:
                out["floor"] = floors[(m, t)][i]
            rows.append(out)
        store.append_rows(store.results_path(directory, m, t), rows)
    return directory
