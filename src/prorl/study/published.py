"""Evaluation results that outlive the machine they were computed on.

A study's work directory (runs, checkpoints, every sampled text) is never committed, so a
lost machine loses it. Each evaluated model is therefore also published, as soon as its
evaluation finishes, under ``RESULTS/evals/``: the same rows without the sampled texts (the
lenient reading of each text is kept as a flag, and its last number as ``final``), gzipped,
with the evaluation's manifest. That is everything ``prorl report`` computes from (counts,
rewards, lengths, formats, floors, lenient success, the guessing floor) at a few hundred kB
per model. A rerun on a fresh machine puts the
published models back into the work directory before evaluating or reporting, so a lost
machine costs only the part that was running.

Layout (mirrors :mod:`prorl.evaluate.store`)::

    RESULTS/evals/eval.json                        the manifest: settings, tasks, models
    RESULTS/evals/results/<model>/<task>.jsonl.gz  one compact row per problem
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from prorl.evaluate import store
from prorl.verify.lenient import as_number, last_number, lenient_correct

FIXED = ("n", "split", "seed", "sampling")  # settings two evaluations must share to merge


def compact_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` without its sampled texts; each sample gains ``lenient`` (the lenient reading
    of its text: True, False, or None where the answer is not a number) and, where the
    answer is a number, ``final`` (the text's last number as a string such as ``"7/2"``, or
    None when it wrote none), from which the guessing floor is recomputed."""
    answer = str(row.get("answer", ""))
    numeric = as_number(answer) is not None
    samples = []
    for s in row["samples"]:
        out = {k: v for k, v in s.items() if k != "text"}
        if "text" in s:
            out["lenient"] = lenient_correct(s["text"], answer)
            if numeric:
                final = last_number(s["text"])
                out["final"] = None if final is None else str(final)
        samples.append(out)
    return {**row, "samples": samples}


def _gz_path(directory: Path, model: str, task: str) -> Path:
    return directory / store.RESULTS / store.slug(model) / f"{store.slug(task)}.jsonl.gz"


def _manifest(directory: Path) -> dict[str, Any]:
    man = store.read_manifest(directory)
    if man is None:
        raise ValueError(f"{directory} holds no evaluation (no {store.MANIFEST})")
    return man


def _check_same(work: dict[str, Any], published: dict[str, Any], where: Path) -> None:
    diff = [k for k in FIXED if work.get(k) != published.get(k)]
    if diff:
        raise ValueError(
            f"{where} was evaluated with other settings ({', '.join(diff)}) than this "
            "study's work directory; they cannot be merged (publish into another results "
            "directory, or remove the published copy deliberately)"
        )


def _with_tasks(man: dict[str, Any], tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``man``'s tasks followed by those of ``tasks`` it does not list yet."""
    known = {t["name"] for t in man["tasks"]}
    return [*man["tasks"], *(t for t in tasks if t["name"] not in known)]


def publish_model(eval_dir: Path, dest: Path, model: str) -> None:
    """Publish ``model``'s finished rows from ``eval_dir`` into ``dest`` (replacing an earlier
    copy of that model) and add it to ``dest``'s manifest."""
    man = _manifest(eval_dir)
    entry = next((m for m in man["models"] if m["label"] == model), None)
    if entry is None:
        raise ValueError(f"{eval_dir} holds no model {model!r}")
    for task in man["tasks"]:
        rows = store.read_rows(store.results_path(eval_dir, model, task["name"]))
        payload = "".join(json.dumps(compact_row(r), ensure_ascii=False) + "\n" for r in rows)
        # mtime=0: publishing the same rows again gives the same bytes (no spurious diff)
        data = gzip.compress(payload.encode("utf-8"), mtime=0)
        store.write_atomic(_gz_path(dest, model, task["name"]), data)
    published = store.read_manifest(dest)
    if published is None:
        published = {**man, "models": []}
    else:
        _check_same(man, published, dest)
    published["tasks"] = _with_tasks(published, man["tasks"])
    others = [m for m in published["models"] if m["label"] != model]
    published["models"] = [*others, entry]
    store.write_manifest(dest, published)


def published_models(dest: Path) -> list[str]:
    man = store.read_manifest(dest)
    return [m["label"] for m in man["models"]] if man else []


def restore(dest: Path, eval_dir: Path) -> list[str]:
    """Put every published model that ``eval_dir`` lacks back into it (rows decompressed,
    manifest entry added); returns the models restored. A model ``eval_dir`` already holds
    (finished or in progress) is left as it is."""
    published = store.read_manifest(dest)
    if published is None:
        return []
    work = store.read_manifest(eval_dir)
    if work is None:
        work = {**published, "models": []}
    else:
        _check_same(work, published, dest)
    restored = []
    held = {m["label"] for m in work["models"]}
    for entry in published["models"]:
        model = entry["label"]
        if model in held or (eval_dir / store.RESULTS / store.slug(model)).exists():
            continue
        for task in published["tasks"]:
            src = _gz_path(dest, model, task["name"])
            if src.is_file():
                target = store.results_path(eval_dir, model, task["name"])
                store.write_atomic(target, gzip.decompress(src.read_bytes()))
        work["models"] = [*work["models"], entry]
        restored.append(model)
    work["tasks"] = _with_tasks(work, published["tasks"])
    if restored:
        store.write_manifest(eval_dir, work)
    return restored
