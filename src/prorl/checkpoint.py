"""Run directory layout, atomic checkpoint files, resume points and export.

This module knows files only; what a training state puts into them and how a learner
group loads them is ``prorl.state``.

``RUN_DIR/checkpoints/step_00000010/`` holds ``policy/`` (a plain HF folder with the
tokenizer), ``reference.pt`` (the reference policy's state dict), ``trainer.pt`` (optimizer,
scheduler, data cursor, RNG states, reset history, monitor state, step) and ``config.yaml``
(the resolved config). A save writes everything into ``.tmp-step_XXXXXXXX`` in the same
parent, fsyncs it, renames it to ``step_XXXXXXXX`` and writes the ``COMPLETE`` marker last:
a directory without the marker is an interrupted save and is never loaded.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from prorl.config import ConfigError, keeps_reference

MARKER = "COMPLETE"
TMP_PREFIX = ".tmp-"
log = logging.getLogger("prorl")

# Config keys that must be equal between a checkpoint and the run resuming it: a different
# value would silently train a different experiment (or fail to load the weights). Every
# other key may change on resume (e.g. ``steps`` to extend a run, ``optim.lr``); the
# change is recorded as an event.
MUST_MATCH = (
    "seed",
    "model.name",
    "model.dtype",
    "data.tasks",
    "rollout.n",
    "rollout.prompts_per_step",
    "algo.advantage",
    "algo.policy_loss",  # another loss on resume is another experiment
)


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used for this run (exit code 2 in the CLI)."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written; the previous ones are intact."""


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def step_of(path: Path) -> int:
    return int(path.name.split("_")[1])


def _all_step_dirs(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [d for d in root.glob("step_*") if d.is_dir() and d.name[5:].isdigit()]
    return sorted(found, key=step_of)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    return [d for d in _all_step_dirs(run_dir) if (d / MARKER).is_file()]


def latest_policy_dir(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] / "policy" if dirs else None


def resume_point(run_dir: Path) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are skipped with a warning."""
    complete = checkpoint_dirs(run_dir)
    newest = step_of(complete[-1]) if complete else -1
    for d in _all_step_dirs(run_dir):
        if step_of(d) > newest:
            log.warning("skipping incomplete checkpoint %s (no %s marker)", d, MARKER)
    return complete[-1] if complete else None


# --- saving -------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer may draw from, as plain types (loadable with weights_only)."""
    state = np.random.get_state()
    assert isinstance(state, tuple)  # legacy=True (the default) returns the tuple form
    kind, keys, pos, has_gauss, gauss = state
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar per save/load is noise in the log


def save_checkpoint(
    run_dir: Path,
    step: int,
    policy: Any,
    tokenizer: Any,
    ref: Any | None,
    trainer: dict[str, Any],
    config: dict[str, Any],
    before_rename: Callable[[Path], None] | None = None,
    full: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and return its directory.

    Any failure (disk full, ...) removes the temporary directory and re-raises: the
    previous checkpoints are never touched. ``before_rename`` is a test hook. ``full``: the
    gathered ``policy`` and ``reference`` state dicts of sharded (FSDP2) models.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f"{TMP_PREFIX}{step_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a save killed earlier
    _quiet_hf()
    try:
        tmp.mkdir()
        full = full or {}
        policy.save_pretrained(tmp / "policy", state_dict=full.get("policy"))
        tokenizer.save_pretrained(tmp / "policy")
        if ref is not None:
            torch.save(full.get("reference") or ref.state_dict(), tmp / "reference.pt")
        torch.save({**trainer, "step": step}, tmp / "trainer.pt")
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        _fsync_tree(tmp)
        if before_rename is not None:
            before_rename(tmp)
        if final.exists():  # an incomplete save of this step from a killed run
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(root)
        with open(final / MARKER, "w") as f:  # last: only now is the checkpoint usable
            f.write(json.dumps({"step": step}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def prune(run_dir: Path, keep_last: int, milestones_every: int = 0) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep_last`` (milestones stay) and
    incomplete ones older than the newest complete one. Returns what was deleted."""
    complete = checkpoint_dirs(run_dir)
    if not complete:
        return []
    keep = set(complete[-keep_last:])
    newest = step_of(complete[-1])
    gone = []
    for d in _all_step_dirs(run_dir):
        step = step_of(d)
        milestone = milestones_every > 0 and step % milestones_every == 0
        if d in keep or (milestone and d in complete) or step > newest:
            continue
        shutil.rmtree(d, ignore_errors=True)
        gone.append(d)
    return gone


# --- loading ------------------------------------------------------------------------------


def load_trainer(ckpt: Path) -> dict[str, Any]:
    # map_location: a checkpoint written from GPU-resident tensors loads on any machine
    state: dict[str, Any] = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    return state


def read_hf_weights(folder: Path, dtype: torch.dtype) -> dict[str, Any]:
    """The state dict of the HF model folder ``folder`` (a checkpoint's ``policy/``)."""
    from transformers import AutoModelForCausalLM

    _quiet_hf()
    weights: dict[str, Any] = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).state_dict()
    return weights


def read_reference(ckpt: Path) -> dict[str, Any]:
    """The reference policy's state dict stored in checkpoint ``ckpt``."""
    weights: dict[str, Any] = torch.load(
        ckpt / "reference.pt", map_location="cpu", weights_only=True
    )
    return weights


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "settings":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_compatible(saved: dict[str, Any], current: dict[str, Any], step: int) -> list[str]:
    """Raise CheckpointError when ``current`` cannot continue a checkpoint of ``saved`` at
    ``step``; return the keys that changed in an allowed way."""
    a, b = _flat(saved), _flat(current)
    bad = [k for k in MUST_MATCH if a.get(k) != b.get(k)]
    if bad:
        diffs = "; ".join(f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in bad)
        raise CheckpointError(
            f"resume: the checkpoint at step {step} was made with a different config ({diffs}); "
            "use a new --run-dir for a different experiment"
        )

    def keeps_ref(c: dict[str, Any]) -> bool:
        return keeps_reference(c.get("algo.kl_coef", 0), bool(c.get("algo.track_kl", False)))

    if keeps_ref(a) != keeps_ref(b):
        raise CheckpointError(
            "resume: the reference cannot come or go on resume (algo.kl_coef between 0 and "
            "> 0, or algo.track_kl); use a new --run-dir"
        )
    if b.get("steps", 0) < step:
        raise CheckpointError(
            f"resume: steps={b.get('steps')} is below the checkpoint's step {step}"
        )
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k != "run_dir")


def truncate_jsonl(path: Path, step: int) -> int:
    """Drop rows with ``step`` > ``step`` (and a torn last line); return how many went.

    Rewritten through a temporary file and a rename so a kill here loses nothing."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if int(row.get("step", 0)) > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(ln + "\n" for ln in kept))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    return dropped


# --- export -------------------------------------------------------------------------------


def export(run_dir: Path, out_dir: Path, step: int | None = None) -> Path:
    """Copy a checkpoint's policy (model + tokenizer) to ``out_dir`` as a plain HF folder.

    Refuses a non-empty ``out_dir``; ``step`` None means the newest complete checkpoint."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"export: {out_dir} exists and is not empty; choose a new directory")
    dirs = checkpoint_dirs(run_dir)
    if not dirs:
        raise ValueError(f"export: {run_dir} holds no complete checkpoint")
    if step is None:
        ckpt = dirs[-1]
    else:
        match = [d for d in dirs if step_of(d) == step]
        if not match:
            have = ", ".join(str(step_of(d)) for d in dirs)
            raise ValueError(f"export: no complete checkpoint at step {step} (have: {have})")
        ckpt = match[0]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f"{TMP_PREFIX}{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ckpt / "policy", tmp)
    if out_dir.exists():
        out_dir.rmdir()
    tmp.rename(out_dir)
    return ckpt
