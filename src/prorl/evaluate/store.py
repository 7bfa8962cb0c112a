"""On-disk layout of an evaluation (no torch): a manifest plus one JSONL per (model, task).

```
DIR/eval.json                          manifest: settings, models in order, tasks
DIR/results/<model>/<task>.jsonl       one line per finished problem, all n samples
```

A line is written only once every sample of its problem is generated and scored, appended
with flush + fsync; the manifest is replaced atomically (temp file + rename). A crash can
therefore leave at most one truncated last line, which readers skip and writers cut off
before appending. Existing lines are never rewritten.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

MANIFEST = "eval.json"
RESULTS = "results"
FORMAT_VERSION = 1


def slug(text: str) -> str:
    """A file-name-safe form of a task or model name (``rg/leg_counting`` -> ``rg__leg_counting``)."""
    s = text.strip().replace("/", "__")
    s = re.sub(r"[^A-Za-z0-9_.=+-]", "-", s)
    return s.strip(".") or "unnamed"


def results_path(directory: Path, model: str, task: str) -> Path:
    return Path(directory) / RESULTS / slug(model) / f"{slug(task)}.jsonl"


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it was not written by prorl eval") from e
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a prorl evaluation manifest (version {FORMAT_VERSION})")
    return data


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename): readers see the
    old or the new file, never half of one. Readable by all (mkstemp's 0600 would hide a
    report or a published result from its readers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically: readers see the old or the new file, never half."""
    write_atomic(
        Path(directory) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode()
    )


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All complete rows of a results file; a truncated last line (a crash) is ignored.

    A corrupt line anywhere but at the end is not a crash artefact: it raises ValueError.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # no newline after it: the write was interrupted
                break
            raise ValueError(f"{path}: line {i + 1} is corrupt ({e})") from e
    return rows


def _cut_partial_line(path: Path) -> None:
    """Drop bytes after the last newline so the next append starts on a fresh line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows durably (flush + fsync), after cutting off a crash-truncated last line."""
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _cut_partial_line(path)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with path.open("a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def read_model_files(directory: Path, model: str) -> dict[str, bytes]:
    """A model's stored results files as they are (file name -> bytes), to give another
    process (a learner rank on another node) the same view of what is done."""
    folder = Path(directory) / RESULTS / slug(model)
    if not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jsonl"))}


def write_model_files(directory: Path, model: str, files: dict[str, bytes]) -> None:
    """Make a model's results folder hold exactly ``files`` (see :func:`read_model_files`)."""
    folder = Path(directory) / RESULTS / slug(model)
    if files:
        folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jsonl"):
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)


def find_eval_dir(directory: Path) -> Path:
    """The evaluation directory for ``prorl report DIR``: DIR itself, or a run's DIR/eval.

    Raises ValueError naming what is missing when neither holds a manifest.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    for cand in (directory, directory / "eval"):
        if (cand / MANIFEST).exists():
            return cand
    raise ValueError(
        f"no evaluation results in {directory}: expected {directory / MANIFEST} "
        f"(from `prorl eval --out {directory}`) or {directory / 'eval' / MANIFEST} (a run)"
    )
