"""Scaling out without Ray: the learner's split of the work and the scale config.
Runs on a local Ray cluster are in test_scale_ray.py."""

from __future__ import annotations

import pytest

from prorl.config import ConfigError, load_config
from prorl.scale.learner import shard_micro_batches


def test_shard_splits_contiguously_and_pads_with_zero_weight() -> None:
    ids = list(range(10, 19))  # 9 sequences, micro-batches of 2, 2 ranks: 4 | 5 sequences
    r0 = shard_micro_batches(ids, 2, 0, 2)
    r1 = shard_micro_batches(ids, 2, 1, 2)
    assert r0 == [([10, 11], 1.0), ([12, 13], 1.0), ([10], 0.0)]  # padded to rank 1's count
    assert r1 == [([14, 15], 1.0), ([16, 17], 1.0), ([18], 1.0)]
    real = [i for part in (r0, r1) for m, w in part if w for i in m]
    assert real == ids  # every sequence exactly once, in order
    # fewer sequences than ranks: the empty rank still takes part with a zero-weight pass
    assert shard_micro_batches([7], 8, 0, 2) == [([7], 0.0)]
    assert shard_micro_batches([7], 8, 1, 2) == [([7], 1.0)]


@pytest.mark.parametrize(
    "override, needle",
    [
        ("scale.backend=slurm", "scale.backend"),
        ("scale.learner_procs=2", "scale.learner_procs"),  # only with the ray backend
        ("scale.placement=ANYWHERE", "scale.placement"),
        ("scale.rollout_workers=0", "scale.rollout_workers"),
    ],
)
def test_scale_config_errors_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config("debug", [override])


def test_rank_scratch_removes_only_dead_ranks_leftovers(tmp_path) -> None:
    """Ray and torchrun kill ranks > 0 without their cleanup; the next rank on the host
    removes what they left, and nothing of a live process or another host."""
    import os
    import subprocess
    import sys

    from prorl.scale.launch import _host_tag, rank_scratch

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a real pid whose process is gone
    host = _host_tag()
    stale = tmp_path / f"prorl-rank1-{dead.pid}@{host}-abc"
    live = tmp_path / f"prorl-rank2-{os.getpid()}@{host}-def"
    elsewhere = tmp_path / f"prorl-rank1-{dead.pid}@{host}x-ghi"  # another machine's /tmp
    unrelated = tmp_path / "prorl-rank1-oldstyle"
    for d in (stale, live, elsewhere, unrelated):
        (d / "metrics").mkdir(parents=True)
    new = rank_scratch(1, tmp_path)
    assert not stale.exists()
    assert live.is_dir() and elsewhere.is_dir() and unrelated.is_dir()
    assert new.is_dir() and not any(new.iterdir())
    assert new.name.startswith(f"prorl-rank1-{os.getpid()}@{host}-")
    assert rank_scratch(1, tmp_path) != new  # each call its own directory
    assert new.is_dir()  # ... and the live one's stays
