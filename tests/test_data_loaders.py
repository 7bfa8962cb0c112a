"""Reading rows from JSONL, JSON, Parquet and datasets-style Arrow folders, with locations."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prorl.data.loaders import Location, RowProblem, load_rows

VERL_ROWS = [
    {
        "data_source": "openai/gsm8k",
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+3?"},
        ],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "5"},
        "extra_info": {"split": "train", "index": 0},
    },
    {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": "What is 4*4?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "16"},
        "extra_info": {"split": "train", "index": 1},
    },
]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def write_verl_parquet(path: Path, rows: list[dict]) -> Path:
    # Explicit nested types, as veRL's preprocessing scripts produce them.
    schema = pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("ability", pa.string()),
            (
                "reward_model",
                pa.struct([("style", pa.string()), ("ground_truth", pa.string())]),
            ),
            ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64())])),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_saved_dataset(folder: Path, shards: list[list[dict]]) -> Path:
    """The layout ``datasets.Dataset.save_to_disk`` writes: Arrow *stream* shards named
    data-0000i-of-0000n.arrow, listed in state.json, next to dataset_info.json."""
    folder.mkdir(parents=True)
    names = []
    for i, rows in enumerate(shards):
        name = f"data-{i:05d}-of-{len(shards):05d}.arrow"
        table = pa.Table.from_pylist(rows)
        with (
            pa.OSFile(str(folder / name), "wb") as sink,
            pa.ipc.new_stream(sink, table.schema) as writer,
        ):
            writer.write_table(table)
        names.append(name)
    state = {
        "_data_files": [{"filename": n} for n in names],
        "_fingerprint": "0123456789abcdef",
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "dataset_info.json").write_text(json.dumps({"citation": "", "features": {}}))
    return folder


def test_jsonl_rows_keep_their_line_numbers(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", ['{"q": 1}', "", '{"q": 2}'])
    got = list(load_rows(f))
    assert [row for _, row in got] == [{"q": 1}, {"q": 2}]
    # The blank line 2 is skipped but still counted: the second row is on line 3.
    assert [loc.index for loc, _ in got] == [1, 3]
    assert str(got[1][0]) == f"{f}:3"


def test_json_array_and_gzip(tmp_path: Path) -> None:
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"q": "x"}, {"q": "y"}]))
    assert [(loc.index, r["q"]) for loc, r in load_rows(arr)] == [(0, "x"), (1, "y")]
    gz = tmp_path / "b.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write('{"q": "z"}\n')
    assert [r for _, r in load_rows(gz)] == [{"q": "z"}]


def test_parquet_with_verl_nested_columns(tmp_path: Path) -> None:
    f = write_verl_parquet(tmp_path / "train.parquet", VERL_ROWS)
    got = list(load_rows(f))
    assert [row for _, row in got] == VERL_ROWS
    assert [str(loc) for loc, _ in got] == [f"{f}:row 0", f"{f}:row 1"]


def test_saved_dataset_folder_reads_shards_in_state_order(tmp_path: Path) -> None:
    folder = write_saved_dataset(
        tmp_path / "ds", [[{"question": "a", "answer": "1"}], [{"question": "b", "answer": "2"}]]
    )
    got = list(load_rows(folder))
    assert [r["question"] for _, r in got] == ["a", "b"]
    assert got[1][0] == Location(str(folder / "data-00001-of-00002.arrow"), 0, "row")


def test_arrow_file_format_is_accepted_too(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([{"question": "q", "answer": "a"}])
    path = tmp_path / "x.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    assert [r for _, r in load_rows(path)] == [{"question": "q", "answer": "a"}]


def test_dataset_dict_folder_asks_for_a_split(tmp_path: Path) -> None:
    root = tmp_path / "dd"
    write_saved_dataset(root / "train", [[{"question": "a", "answer": "1"}]])
    write_saved_dataset(root / "test", [[{"question": "b", "answer": "2"}]])
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\].*path="):
        list(load_rows(root))


def test_bad_paths_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ValueError, match="nope.jsonl.*does not exist"):
        list(load_rows(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .jsonl"):
        list(load_rows(empty))
    corrupt = tmp_path / "bad.parquet"
    corrupt.write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match="bad.parquet"):
        list(load_rows(corrupt))
    broken_state = tmp_path / "st"
    broken_state.mkdir()
    (broken_state / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="state.json"):
        list(load_rows(broken_state))


def test_malformed_lines_skip_or_raise_with_file_and_line(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "bad.jsonl", ['{"q": 1}', "{not json", "[1, 2]", '{"q": 4}'])
    problems: list[RowProblem] = []
    rows = [r for _, r in load_rows(f, on_error="skip", problems=problems)]
    assert rows == [{"q": 1}, {"q": 4}]
    assert [str(p.location) for p in problems] == [f"{f}:2", f"{f}:3"]
    assert "invalid JSON" in problems[0].message
    assert "got list" in problems[1].message
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid JSON"):
        list(load_rows(f, on_error="raise"))
    with pytest.raises(ValueError, match="on_error"):
        list(load_rows(f, on_error="ignore"))
