"""Read rows from local files: JSONL (optionally gzipped), JSON arrays, Parquet, and folders
written by ``datasets.Dataset.save_to_disk`` (Arrow IPC *stream* files plus ``state.json``),
read with pyarrow alone so users need not install ``datasets``.

Every row comes with a ``Location`` (file and line for text formats, row number for tabular
ones) so a malformed row is reported where the user can find it. A row that cannot be parsed
is either raised as ``ValueError`` or collected as a ``RowProblem`` (``on_error="skip"``);
a missing or unreadable *file* is always a ``ValueError`` naming the path.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OnError = Literal["skip", "raise"]
TEXT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")
_BATCH_ROWS = 1024


@dataclass(frozen=True)
class Location:
    """Where a row came from. ``line`` counts from 1 (as editors do) for text files;
    ``row`` counts from 0 (as pandas and pyarrow do) for Parquet and Arrow files."""

    file: str
    index: int
    unit: Literal["line", "row"] = "line"

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.index}" if self.unit == "line" else f"{self.file}:row {self.index}"
        )


@dataclass(frozen=True)
class RowProblem:
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def check_on_error(on_error: str) -> OnError:
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    return on_error  # type: ignore[return-value]


def load_rows(
    path: str | Path,
    *,
    on_error: str = "raise",
    problems: list[RowProblem] | None = None,
) -> Iterator[tuple[Location, dict[str, Any]]]:
    """Yield ``(location, row)`` for every row of ``path`` in file order.

    ``path`` is a ``.jsonl``/``.json`` file (``.gz`` allowed), a ``.parquet`` file, an
    ``.arrow`` file, a ``save_to_disk`` folder, or a folder of such files (read in name
    order). Rows that are not JSON objects raise ``ValueError("file:line: ...")`` when
    ``on_error="raise"``; with ``"skip"`` they are appended to ``problems`` and skipped.
    """
    mode = check_on_error(on_error)
    for file in _resolve_files(Path(path)):
        name = file.name.lower()
        if name.endswith(TEXT_SUFFIXES):
            rows = _read_text(file)
        elif name.endswith(".parquet"):
            rows = _read_parquet(file)
        else:
            rows = _read_arrow(file)
        for loc, row in rows:
            if isinstance(row, dict):
                yield loc, row
                continue
            problem = RowProblem(loc, str(row))
            if mode == "raise":
                raise ValueError(f"{problem} (set on_error=skip to skip such rows)")
            if problems is not None:
                problems.append(problem)


def _resolve_files(path: Path) -> list[Path]:
    if not path.exists():
        raise ValueError(f"data path {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
        raise ValueError(
            f"{str(path)!r} holds a DatasetDict with splits {splits}; point path= at one "
            f"split folder, e.g. {str(path / (splits[0] if splits else 'train'))!r}"
        )
    state = path / "state.json"
    if state.is_file():
        try:
            names = [f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{str(state)!r} is not a datasets state.json: {e}") from e
        return [path / n for n in names]
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.name.lower().endswith((*TEXT_SUFFIXES, ".parquet", ".arrow"))
    )
    if not files:
        raise ValueError(
            f"folder {str(path)!r} has no .jsonl, .json, .parquet or .arrow files "
            "(and no state.json from datasets' save_to_disk)"
        )
    return files


def _read_text(file: Path) -> Iterator[tuple[Location, dict[str, Any] | str]]:
    """JSON Lines, or one JSON array when the first non-blank character is ``[``."""
    opener: Any = gzip.open if file.name.lower().endswith(".gz") else open
    try:
        with opener(file, "rt", encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {str(file)!r}: {e}") from e
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}:{e.lineno}: invalid JSON array: {e.msg}") from e
        for i, item in enumerate(items):
            yield Location(str(file), i, "row"), _object_or_problem(item)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        loc = Location(str(file), lineno)
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            yield loc, f"invalid JSON: {e.msg} (column {e.colno})"
            continue
        yield loc, _object_or_problem(item)


def _object_or_problem(item: Any) -> dict[str, Any] | str:
    if isinstance(item, dict):
        return item
    return f"expected a JSON object, got {type(item).__name__}"


def _read_parquet(file: Path) -> Iterator[tuple[Location, dict[str, Any] | str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"cannot read Parquet file {str(file)!r}: {e}") from e
    # Batches keep memory flat on large files; nested columns come back as dicts/lists.
    row = 0
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
        for item in batch.to_pylist():
            yield Location(str(file), row, "row"), item
            row += 1


def _read_arrow(file: Path) -> Iterator[tuple[Location, dict[str, Any] | str]]:
    """An Arrow IPC file: ``save_to_disk`` writes the *stream* format; the random-access
    *file* format (magic ``ARROW1``) is accepted too."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(file)) as src:
            if src.read(6) == b"ARROW1":
                src.seek(0)
                reader: Any = pa.ipc.open_file(src)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                src.seek(0)
                batches = iter(pa.ipc.open_stream(src))
            row = 0
            for batch in batches:
                for item in batch.to_pylist():
                    yield Location(str(file), row, "row"), item
                    row += 1
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"cannot read Arrow file {str(file)!r}: {e}") from e
