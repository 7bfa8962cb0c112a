"""Turn a raw row of any supported schema into a ``Record``, and route it to a verifier.

Schemas (detected per row, so one file may mix them):

- veRL: ``data_source``, ``prompt`` (list of chat messages), ``ability``,
  ``reward_model: {"style": "rule", "ground_truth": ...}``, ``extra_info``.
- simple: ``question``/``problem``/``prompt`` text and ``answer``/``solution``/``ground_truth``.
- IFEval: ``prompt``, ``instruction_id_list``, ``kwargs``.
- code: ``input_output`` (APPS/TACO JSON), ``test`` + ``entry_point`` (HumanEval),
  ``test_list`` (MBPP).

A row that fits none raises ``RowError`` with a message saying what was missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROMPT_KEYS = ("prompt", "question", "problem", "query", "instruction", "text")
ANSWER_KEYS = ("answer", "ground_truth", "solution", "final_answer", "target")
ROLES = ("system", "user", "assistant")

# Substrings of data_source (lower-cased), checked in order; user entries go first.
# Stem before math so that e.g. "mmlu_college_mathematics" (multiple choice) is stem.
DEFAULT_ROUTES: tuple[tuple[str, str], ...] = (
    ("ifeval", "ifeval"),
    ("reasoning_gym", "reasoning_gym"),
    ("gpqa", "stem"),
    ("mmlu", "stem"),
    ("scp", "stem"),
    ("math", "math"),
    ("deepscaler", "math"),
    ("aime", "math"),
    ("amc", "math"),
    ("gsm", "math"),
    ("numina", "math"),
    ("olympiad", "math"),
    ("code", "code"),
    ("apps", "code"),
    ("taco", "code"),
    ("humaneval", "code"),
    ("mbpp", "code"),
    ("eurus", "code"),
    ("leetcode", "code"),
    ("primeintellect", "code"),
)
DOMAINS = {
    "math": "math",
    "stem": "stem",
    "stem_mc": "stem",
    "code": "code",
    "ifeval": "instruction_following",
    "reasoning_gym": "logic",
}
_LETTER = re.compile(r"[A-Z]")


class RowError(ValueError):
    """A row that does not fit any supported schema; the caller adds the location."""


@dataclass(frozen=True)
class Record:
    """One validated row. ``ground_truth`` is the raw reference (what a veRL
    ``compute_score`` receives); ``answer`` its string form (JSON for non-strings);
    ``hint`` is the verifier the schema implies ("code", "ifeval") or ""."""

    prompt: tuple[dict[str, str], ...]
    answer: str
    ground_truth: Any
    data_source: str
    ability: str
    extra_info: dict[str, Any]
    hint: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """User turns joined: the text that identifies a problem for de-duplication."""
        return "\n".join(m["content"] for m in self.prompt if m["role"] == "user")


def normalize_row(
    row: Mapping[str, Any],
    *,
    prompt_key: str | None = None,
    answer_key: str | None = None,
    system_prompt: str | None = None,
) -> Record:
    """Validate ``row`` and build its ``Record``; raises ``RowError`` naming what is wrong."""
    prompt = _prompt(row, prompt_key, system_prompt)
    ground_truth, hint, fields = _ground_truth(row, answer_key)
    extra = row.get("extra_info")
    extra_info = (
        dict(extra) if isinstance(extra, Mapping) else ({} if extra is None else {"value": extra})
    )
    return Record(
        prompt=prompt,
        answer=answer_text(ground_truth),
        ground_truth=ground_truth,
        data_source=str(row.get("data_source") or ""),
        ability=str(row.get("ability") or ""),
        extra_info=extra_info,
        hint=hint,
        fields=fields,
    )


def answer_text(ground_truth: Any) -> str:
    """Strings unchanged; numbers as written; lists and dicts (code tests) JSON-encoded."""
    if isinstance(ground_truth, str):
        return ground_truth
    if isinstance(ground_truth, bool | int | float):
        return str(ground_truth)
    return json.dumps(ground_truth, ensure_ascii=False)


def _get(row: Mapping[str, Any], key: str) -> Any:
    """``row[key]``, where a dotted key such as ``reward_model.ground_truth`` descends."""
    if "." not in key:  # the common case, kept cheap: it runs for every row of every file
        return row.get(key)
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _prompt(
    row: Mapping[str, Any], prompt_key: str | None, system_prompt: str | None
) -> tuple[dict[str, str], ...]:
    keys = (prompt_key,) if prompt_key else PROMPT_KEYS
    key = next((k for k in keys if _get(row, k) not in (None, "", [])), None)
    if key is None:
        raise RowError(f"no prompt: expected a non-empty field among {list(keys)}")
    value = _get(row, key)
    if isinstance(value, str):
        user = {"role": "user", "content": value}
        return ({"role": "system", "content": system_prompt}, user) if system_prompt else (user,)
    if not isinstance(value, list):
        raise RowError(f"field {key!r} must be text or a list of chat messages")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES:
            raise RowError(f"{key}[{i}] is not a chat message with role in {list(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise RowError(f"{key}[{i}] has no text 'content'")
        messages.append({"role": str(m["role"]), "content": m["content"]})
    if not any(m["role"] == "user" for m in messages):
        raise RowError(f"field {key!r} has no user message")
    return tuple(messages)


def _ground_truth(
    row: Mapping[str, Any], answer_key: str | None
) -> tuple[Any, str, dict[str, Any]]:
    """(raw ground truth, schema hint, structured fields for verifiers)."""
    if answer_key:
        value = _get(row, answer_key)
        if value in (None, ""):
            raise RowError(f"no answer: field {answer_key!r} is missing or empty")
        return value, "", {}
    reward_model = row.get("reward_model")
    if isinstance(reward_model, Mapping) and reward_model.get("ground_truth") not in (None, ""):
        return reward_model["ground_truth"], "", {}
    if row.get("instruction_id_list") is not None:
        return _ifeval(row)
    code = _code_tests(row)
    if code is not None:
        return code, "code", {"tests": code}
    for key in ANSWER_KEYS:
        if row.get(key) not in (None, ""):
            return row[key], "", {}
    raise RowError(
        "no answer: expected reward_model.ground_truth, one of "
        f"{list(ANSWER_KEYS)}, instruction_id_list (IFEval), or input_output/test/test_list (code)"
    )


def _ifeval(row: Mapping[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    ids = row["instruction_id_list"]
    kwargs = row.get("kwargs")
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as e:
            raise RowError(f"'kwargs' is not valid JSON: {e.msg}") from e
    if kwargs is None:
        kwargs = [{} for _ in ids] if isinstance(ids, list) else None
    if not (isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)):
        raise RowError("'instruction_id_list' must be a non-empty list of strings")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise RowError("'kwargs' must be a list with one entry per instruction id")
    # datasets fills absent struct fields with None; verifiers want only the given ones.
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    truth = {"instruction_id_list": ids, "kwargs": kwargs}
    return truth, "ifeval", dict(truth)


def _code_tests(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if row.get("input_output") not in (None, ""):
        tests = row["input_output"]
        if isinstance(tests, str):
            try:
                tests = json.loads(tests)
            except json.JSONDecodeError as e:
                raise RowError(f"'input_output' is not valid JSON: {e.msg}") from e
        if not isinstance(tests, Mapping) or not isinstance(tests.get("inputs"), list):
            raise RowError("'input_output' must hold {'inputs': [...], 'outputs': [...]}")
        if len(tests["inputs"]) != len(tests.get("outputs") or []):
            raise RowError("'input_output' has different numbers of inputs and outputs")
        return dict(tests)
    if row.get("test_list"):
        tests = {"test_list": list(row["test_list"])}
        for key in ("test_setup_code", "test_imports", "challenge_test_list"):
            if row.get(key):
                tests[key] = row[key]
        return tests
    if row.get("test") not in (None, ""):
        if not row.get("entry_point"):
            raise RowError("has 'test' but no 'entry_point' (HumanEval schema needs both)")
        return {"test": row["test"], "entry_point": row["entry_point"]}
    return None


@dataclass(frozen=True)
class Router:
    """Chooses a verifier name per row: user ``overrides`` (data_source substring ->
    verifier) first, then the task-wide ``verifier``, then ``DEFAULT_ROUTES`` on
    data_source, then on veRL's ``ability``, then the schema hint."""

    verifier: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()

    def route(self, record: Record) -> str | None:
        source = record.data_source.lower()
        for key, name in self.overrides:
            if key.lower() in source:
                return name
        if self.verifier:
            return self.verifier
        for text in (source, record.ability.lower()):
            for key, name in DEFAULT_ROUTES:
                if text and key in text:
                    return name
        return record.hint or None


def refine(name: str, record: Record, available: set[str]) -> str:
    """``stem`` becomes ``stem_mc`` when the reference is a single capital letter (a
    multiple-choice key) and a ``stem_mc`` verifier exists."""
    if name == "stem" and "stem_mc" in available and _LETTER.fullmatch(record.answer.strip()):
        return "stem_mc"
    return name


def parse_source_map(value: Mapping[str, str] | str | None) -> tuple[tuple[str, str], ...]:
    """Accepts a mapping, a JSON object, or ``"src=verifier,src2=verifier2"`` (CLI form)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"data_source_map is not valid JSON: {e.msg}") from e
        else:
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
                raise ValueError(
                    f"data_source_map {text!r} must look like 'source=verifier,other=verifier'"
                )
            value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, Mapping):
        raise ValueError("data_source_map must map data_source substrings to verifier names")
    return tuple((str(k), str(v)) for k, v in value.items())
