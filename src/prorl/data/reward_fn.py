"""User reward functions given as ``path/to/file.py:function`` with veRL's signature
``compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict``.

A dict result gives its ``"score"`` as the reward and keeps the other keys as details.
Loading is by file path (importlib), cached per process, so the function need not live
in an installed package and a worker process can reload it from the spec string alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prorl.types import Score

RewardFn = Callable[..., Any]
_CACHE: dict[str, RewardFn] = {}


def load_reward_fn(spec: str) -> RewardFn:
    """Import ``function`` from ``file.py`` in ``"file.py:function"``; ``ValueError`` when
    the spec is malformed, the file is missing or fails to import, or the name is not a
    callable in it."""
    if spec in _CACHE:
        return _CACHE[spec]
    file_part, sep, fn_name = spec.rpartition(":")
    if not sep or not file_part or not fn_name:
        raise ValueError(f"reward_fn {spec!r} must look like 'path/to/file.py:function'")
    path = Path(file_part).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"reward_fn file {file_part!r} does not exist (from {spec!r})")
    # A name unique per file so two reward files with the same stem do not collide.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"prorl_reward_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"reward_fn file {str(path)!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # any error in user code is a bad-input error here
        del sys.modules[mod_name]
        raise ValueError(f"reward_fn file {str(path)!r} failed to import: {e!r}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(
            f"reward_fn {spec!r}: no function {fn_name!r} in {str(path)!r}; "
            f"callables there: {', '.join(names) or 'none'}"
        )
    _CACHE[spec] = fn
    return fn


def call_reward_fn(
    fn: RewardFn, data_source: str, solution_str: str, ground_truth: Any, extra_info: Any
) -> Score:
    """Call ``fn`` and normalise its result to a ``Score`` in [0, 1]. An exception or a
    malformed result is the harness's failure, not the model's: ``INFRA_ERROR``."""
    try:
        result = fn(data_source, solution_str, ground_truth, extra_info)
    except Exception as e:  # user code must never take training down
        return Score(0.0, "INFRA_ERROR", {"error": f"reward_fn raised {e!r}"[:300]})
    details: dict[str, Any] = {}
    if isinstance(result, Mapping):
        details = {k: v for k, v in result.items() if k != "score"}
        result = result.get("score")
    if isinstance(result, bool):
        result = float(result)
    if not isinstance(result, int | float) or math.isnan(result):
        return Score(0.0, "INFRA_ERROR", {"error": f"reward_fn returned {result!r}"[:300]})
    reward = min(1.0, max(0.0, float(result)))
    if reward != result:  # veRL functions often give -1 for a bad format; keep the original
        details["raw_score"] = float(result)
    return Score(reward, "ok" if reward >= 1.0 else "wrong", details)
