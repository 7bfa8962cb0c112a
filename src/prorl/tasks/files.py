"""Tasks backed by local data files: ``file`` (any verifier, routed per row) and the named
wrappers ``math``, ``stem``, ``code``, ``ifeval`` (a file task with that verifier).

All rows are read and validated when the task is built, so a malformed row is reported
with its file and line before training starts, never as a crash deep inside it. Scoring is
the module-level ``score_row``, which needs nothing but the example: a verifier worker
process can call it without the task object. See docs/data.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prorl.data.loaders import Location, RowProblem, check_on_error, load_rows
from prorl.data.reward_fn import call_reward_fn, load_reward_fn
from prorl.data.schema import (
    DOMAINS,
    Record,
    Router,
    RowError,
    normalize_row,
    parse_source_map,
    refine,
)
from prorl.data.splits import SPLIT_ORDER, check_fractions, digest, split_of
from prorl.tasks import list_tasks
from prorl.tasks.base import SPLITS, register_task
from prorl.tasks.code import fenced
from prorl.tasks.math_gen import boxed
from prorl.types import Example, Score
from prorl.verify import as_score, get_verifier, list_verifiers

__all__ = ["FileTask", "load_rows", "score_row"]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Row:
    record: Record
    location: Location
    verifier: str  # "" when only a custom reward function scores the row
    digest: str


class FileTask:
    """Problems from local files. ``path`` alone is split by prompt hash into train/val/test
    (``val_fraction``/``test_fraction``); ``val_path``/``test_path`` give explicit held-out
    files instead, and training rows whose prompt appears in them are dropped."""

    def __init__(
        self,
        path: str | None = None,
        *,
        name: str = "file",
        val_path: str | None = None,
        test_path: str | None = None,
        verifier: str | None = None,
        data_source_map: Mapping[str, str] | str | None = None,
        reward_fn: str | None = None,
        prompt_key: str | None = None,
        answer_key: str | None = None,
        system_prompt: str | None = None,
        on_error: str = "raise",
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
        seed: int = 0,
        limit: int | None = None,
    ) -> None:
        if not path:
            raise ValueError(f"task {name!r} needs path=<file.jsonl | file.parquet | folder>")
        self.name = name
        self.path = str(path)
        self.reward_fn = reward_fn
        self.seed = int(seed)
        self._on_error = check_on_error(on_error)
        check_fractions(float(val_fraction), float(test_fraction))
        if limit is not None and int(limit) < 1:
            raise ValueError(f"limit must be a positive number of rows, got {limit}")
        if reward_fn:
            load_reward_fn(reward_fn)  # fail now on a bad path or name, not at step 1
        self._router = Router(verifier or None, parse_source_map(data_source_map))
        self._available = set(list_verifiers()) | set(_LOCAL_VERIFIERS)
        if verifier and not reward_fn and verifier not in self._available:
            raise ValueError(f"unknown verifier {verifier!r}; known: {sorted(self._available)}")
        self._read_opts = {
            "prompt_key": prompt_key,
            "answer_key": answer_key,
            "system_prompt": system_prompt,
        }
        self._limit = int(limit) if limit is not None else None
        self.problems: list[RowProblem] = []
        self.duplicates = 0
        self._splits = self._build_splits(
            val_path, test_path, float(val_fraction), float(test_fraction)
        )
        domains = sorted(
            {_domain(r.verifier, reward_fn) for rows in self._splits.values() for r in rows}
        )
        self.domain = domains[0] if len(domains) == 1 else "mixed"
        verifiers = {r.verifier for rows in self._splits.values() for r in rows}
        # The answer formats of the rows' verifiers, in a fixed order (one for most files).
        self._formats = tuple(
            dict.fromkeys(f for v, f in _ANSWER_FORMATS.items() if v in verifiers)
        )
        self._report()

    # -- construction -------------------------------------------------------------------

    def _build_splits(
        self, val_path: str | None, test_path: str | None, val_frac: float, test_frac: float
    ) -> dict[str, list[_Row]]:
        splits: dict[str, list[_Row]] = {s: [] for s in SPLITS}
        seen: dict[str, str] = {}  # prompt digest -> split that owns it
        sources = {"test": test_path, "val": val_path, "train": self.path}
        # Held-out files first, so a prompt they share with the training file stays held out.
        for split in SPLIT_ORDER:
            source = sources[split]
            if not source:
                continue
            for row in self._read(source):
                target = split
                if split == "train":  # the main file also feeds held-out splits without a file
                    target = split_of(
                        row.record.question,
                        seed=self.seed,
                        val_fraction=0.0 if val_path else val_frac,
                        test_fraction=0.0 if test_path else test_frac,
                    )
                if row.digest in seen:
                    self.duplicates += 1
                    continue
                seen[row.digest] = target
                splits[target].append(row)
        if not splits["train"]:
            first = "; ".join(str(p) for p in self.problems[:3])
            raise ValueError(
                f"task {self.name!r}: no usable training rows in {self.path!r}"
                + (f" ({len(self.problems)} malformed, first: {first})" if first else "")
            )
        return splits

    def _read(self, path: str) -> list[_Row]:
        rows: list[_Row] = []
        for location, raw in load_rows(path, on_error=self._on_error, problems=self.problems):
            try:
                record = normalize_row(raw, **self._read_opts)
                verifier = self._verifier_for(record)
            except RowError as e:
                problem = RowProblem(location, str(e))
                if self._on_error == "raise":
                    raise ValueError(f"{problem} (set on_error=skip to skip such rows)") from e
                self.problems.append(problem)
                continue
            rows.append(_Row(record, location, verifier, digest(record.question)))
            if self._limit is not None and len(rows) >= self._limit:
                break
        return rows

    def _verifier_for(self, record: Record) -> str:
        name = self._router.route(record)
        if self.reward_fn:  # the custom function scores; routing only labels the domain
            return name or ""
        if name is None:
            raise RowError(
                f"no verifier for data_source {record.data_source!r}: set verifier=... or "
                "data_source_map='substring=verifier'"
            )
        name = refine(name, record, self._available)
        if name not in self._available:
            raise RowError(f"verifier {name!r} is not registered; known: {sorted(self._available)}")
        return name

    def _report(self) -> None:
        sizes = {s: len(rows) for s, rows in self._splits.items()}
        if self.problems:
            logger.warning(
                "task %s: skipped %d malformed rows of %s (first: %s)",
                self.name,
                len(self.problems),
                self.path,
                "; ".join(str(p) for p in self.problems[:3]),
            )
        logger.info(
            "task %s: %s rows from %s (%d duplicate prompts dropped), domain %s",
            self.name,
            sizes,
            self.path,
            self.duplicates,
            self.domain,
        )

    # -- Task protocol --------------------------------------------------------------------

    def size(self, split: str = "train") -> int:
        return len(self._rows(split))

    def example(self, index: int, split: str = "train") -> Example:
        rows = self._rows(split)
        if not 0 <= index < len(rows):
            raise IndexError(f"{self.name} {split} has {len(rows)} items, asked for {index}")
        row = rows[index]
        rec, loc = row.record, row.location
        meta: dict[str, Any] = {
            **rec.fields,
            "data_source": rec.data_source,
            "extra_info": rec.extra_info,
            "ground_truth": rec.ground_truth,
            "verifier": row.verifier,
            "domain": _domain(row.verifier, self.reward_fn),
            "reward_fn": self.reward_fn,
            "split": split,
            "file": loc.file,
            loc.unit: loc.index,
            "origin": str(loc),
        }
        return Example(
            uid=f"{self.name}:{split}:{index}:{row.digest[:10]}",
            task=self.name,
            prompt=rec.prompt,
            answer=rec.answer,
            meta=meta,
        )

    def score(self, response: str, example: Example) -> Score:
        return score_row(response, example)

    def format_answer(self, content: str) -> str:
        """``content`` in the answer format of the rows' verifier: ``\\boxed{}`` (math, stem),
        a fenced ```python block (code), ``<answer></answer>`` (reasoning-gym), ``content``
        itself (ifeval, custom). A file that mixes formats gets each of them, one per line,
        so that a trivial answer is tried in every format its rows accept."""
        if not self._formats:
            return content
        return "\n".join(fmt(content) for fmt in self._formats)

    def reference_response(self, example: Example) -> str | None:
        """The row's reference answer in its verifier's format, where that is a single
        answer (math, stem, stem_mc, reasoning-gym rows); None for code (tests, no reference
        solution), ifeval, and rows scored by a custom ``reward_fn``."""
        meta = example.meta
        if meta.get("reward_fn"):
            return None
        fmt = _ANSWER_FORMATS.get(str(meta.get("verifier", "")))
        if fmt is None or fmt is fenced or not example.answer.strip():
            return None
        return fmt(example.answer)

    def _rows(self, split: str) -> list[_Row]:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self._splits[split]


def score_row(response: str, example: Example) -> Score:
    """Score with the example's custom ``reward_fn`` if it has one, else its verifier.
    Never raises: a broken reward function or missing verifier is ``INFRA_ERROR``."""
    meta = example.meta
    spec = meta.get("reward_fn")
    if spec:
        try:
            fn = load_reward_fn(str(spec))
        except ValueError as e:
            return Score(0.0, "INFRA_ERROR", {"error": str(e)[:300]})
        return call_reward_fn(
            fn,
            str(meta.get("data_source", "")),
            response,
            meta.get("ground_truth"),
            meta.get("extra_info", {}),
        )
    name = str(meta.get("verifier", ""))
    try:
        verifier = _LOCAL_VERIFIERS[name] if name in _LOCAL_VERIFIERS else get_verifier(name)
        return as_score(verifier(response, example))
    except Exception as e:  # a verifier bug is the harness's failure, not the model's
        return Score(0.0, "INFRA_ERROR", {"error": f"verifier {name!r}: {e!r}"[:300]})


def _score_reasoning_gym(response: str, example: Example) -> Score:
    """Rows exported from reasoning-gym, scored by the rules of ``rg/<dataset>``
    (``prorl.tasks.reasoning_gym.score_response``): 1 only when the dataset's ``score_answer``
    (or its stricter check) gives the ``<answer>`` text full credit, else 0. Rows of a
    dataset whose scorer is unsound (``UNSOUND``) are not scored: ``INFRA_ERROR``, so they
    never train. The dataset name comes from extra_info (``dataset`` or
    ``metadata.source_dataset``)."""
    import reasoning_gym

    from prorl.tasks.reasoning_gym import UNSOUND, score_response

    extra = example.meta.get("extra_info") or {}
    metadata = extra.get("metadata") or {}
    dataset = str(extra.get("dataset") or metadata.get("source_dataset") or "")
    if not dataset:
        return Score(0.0, "INFRA_ERROR", {"error": "no dataset name in extra_info"})
    if dataset in UNSOUND:
        error = f"reasoning-gym {dataset!r} has an unsound scorer: {UNSOUND[dataset]}"
        return Score(0.0, "INFRA_ERROR", {"error": error})
    entry = {"question": example.question, "answer": example.answer, "metadata": metadata}
    return score_response(dataset, reasoning_gym.get_score_answer_fn(dataset), response, entry)


# Verifiers this module provides when nobody registered one under the name.
_LOCAL_VERIFIERS = {"reasoning_gym": _score_reasoning_gym}


def _tagged(content: str) -> str:
    return f"<answer>{content}</answer>"


# How each verifier wants the final answer written (verifiers not named here: no format).
_ANSWER_FORMATS: dict[str, Callable[[str], str]] = {
    "math": boxed,
    "stem": boxed,
    "stem_mc": boxed,
    "code": fenced,
    "reasoning_gym": _tagged,
}


def _domain(verifier: str, reward_fn: str | None) -> str:
    if not verifier:
        return "custom" if reward_fn else "unknown"
    return DOMAINS.get(verifier, verifier)


@register_task(
    "file",
    domain="file",
    description="problems from a local JSONL/Parquet file or datasets folder (path=...)",
    verifier="routed per row by data_source, or verifier=..., or reward_fn=file.py:fn",
)
def make_file_task(**settings: Any) -> FileTask:
    return FileTask(**settings)


def _named(name: str, verifier: str, domain: str) -> None:
    def factory(path: str | None = None, **settings: Any) -> FileTask:
        if not path:
            builtins = sorted(
                t.name
                for t in list_tasks()
                if t.name.startswith(f"{name}-") or t.name == f"{name}-gen"
            )
            hint = (
                f"; for a built-in set with no files use {' or '.join(builtins)}"
                if builtins
                else ""
            )
            raise ValueError(f"task {name!r} needs path=<file.jsonl | file.parquet | folder>{hint}")
        settings.setdefault("name", name)
        settings.setdefault("verifier", verifier)
        return FileTask(path, **settings)

    register_task(
        name,
        domain=domain,
        description=f"{domain} problems from a local file (path=...), {verifier} verifier",
        verifier=verifier,
    )(factory)


_named("math", "math", "math")
_named("stem", "stem", "stem")
_named("code", "code", "code")
_named("ifeval", "ifeval", "instruction_following")
