"""Weights & Biases as an optional logger: an offline run mirrors metrics.jsonl (same keys and
steps), the resolved config and the events; without the package, ``logging.wandb`` is refused
before anything runs."""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from prorl.config import ConfigError, load_config
from prorl.metrics import read_jsonl


def test_missing_wandb_is_a_clear_config_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without it sees
    with pytest.raises(ConfigError, match=r"logging.wandb: needs the wandb package: pip install"):
        load_config(None, ["logging.wandb=true"])
    assert load_config(None, []).logging.wandb is False  # nothing asked: nothing needed
    from prorl.cli import main

    run = tmp_path / "fresh"
    assert main(["train", "--run-dir", str(run), "logging.wandb=true"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'prorl[wandb]'" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()  # refused before a model loads or a directory is made


def test_wandb_mode_is_checked() -> None:
    with pytest.raises(ConfigError, match="logging.wandb_mode: choose one of offline, online"):
        load_config(None, ["logging.wandb_mode=cloud"])


# --- reading an offline run -------------------------------------------------------------------


def _records(path: Path) -> list[Any]:
    """The protobuf records of a ``run-*.wandb`` file: a 7-byte W&B header, then the LevelDB
    log format (32 KiB blocks; each chunk: crc32, length, type = full/first/middle/last).
    wandb 0.31 has no Python reader of its own (its Go core reads them)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 0 and n == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _history(records: list[Any]) -> dict[int, dict[str, Any]]:
    """``_step`` -> every key logged at that step (rows of one step merged, as W&B shows them)."""
    rows: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item
            }
            rows.setdefault(int(row["_step"]), {}).update(row)
    return rows


def _same(logged: Any, written: Any) -> bool:
    if written is None:  # metrics.jsonl writes NaN/inf as null; W&B keeps them
        return isinstance(logged, str | float) and not math.isfinite(float(logged))
    if isinstance(written, float):
        return isinstance(logged, int | float) and logged == pytest.approx(written, rel=1e-12)
    return bool(logged == written)


def test_offline_run_mirrors_metrics_config_and_events(tmp_path, monkeypatch) -> None:
    if os.environ.get("CI"):  # CI installs the dev extra, which has wandb: never skip there
        import wandb  # noqa: F401
    else:
        pytest.importorskip("wandb", reason="needs the wandb extra: pip install 'prorl[wandb]'")
    from prorl.runtime import run_training
    from test_train import TOY

    # wandb's files (and its settings, cache) in tmp_path: the user's own are never touched
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    events_wanted = [
        "reset.every=1",  # a reset event after step 1
        "health.checks=[{metric: train/reward, min: 2.0}]",  # an alarm event at every step
    ]
    small = ["data.val_problems=1", "eval.n=1", "steps=2", "optim.lr=1e-2", "algo.kl_coef=1e-3"]
    overrides = [*TOY, *small, *events_wanted, "logging.wandb=true", f"run_dir={run}"]
    run_training(load_config(None, overrides), live=False)

    metrics = read_jsonl(run / "metrics.jsonl")
    events = read_jsonl(run / "events.jsonl")
    assert [r["step"] for r in metrics] == [0, 1, 2]  # metrics.jsonl is still written
    assert {e["event"] for e in events} >= {"reset", "alarm"}

    # one offline run under $WANDB_DIR, nothing in the run directory
    (folder,) = (tmp_path / "wandb_dir" / "wandb").glob("offline-run-*")
    assert not (run / "wandb").exists()
    (log_file,) = folder.glob("run-*.wandb")
    records = _records(log_file)

    # the resolved config, under the run directory's name in project prorl
    (meta,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert meta.display_name == "run" and meta.project == "prorl" and meta.run_group == "run"
    logged_cfg = {i.key: json.loads(i.value_json) for i in meta.config.update}
    assert logged_cfg["algo"]["policy_loss"] == "ppo" and logged_cfg["steps"] == 2
    assert logged_cfg["logging"]["wandb"] is True and logged_cfg["run_dir"] == str(run)

    # every metrics.jsonl row: same step, same keys, same values
    history = _history(records)
    for row in metrics:
        logged = history[row["step"]]
        for key, value in row.items():
            if key != "step":
                assert key in logged and _same(logged[key], value), (row["step"], key)

    # reset and alarm events: a marker at their step, and all events in the events table
    for e in events:
        if e["event"] in ("reset", "alarm"):
            assert history[e["step"]][f"events/{e['event']}"] == 1
    (table_file,) = (folder / "files" / "media" / "table").glob("events_table_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["step", "event", "time", "fields"]
    assert [(r[0], r[1]) for r in table["data"]] == [(e["step"], e["event"]) for e in events]
    reset_row = next(r for r in table["data"] if r[1] == "reset")
    reset_event = next(e for e in events if e["event"] == "reset")
    assert json.loads(reset_row[3])["reason"] == reset_event["reason"]
