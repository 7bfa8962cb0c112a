"""A Ray cluster of two nodes, joined by address: the layout a multi-node run has, on one
machine (``ray.cluster_utils.Cluster`` starts a second raylet beside the head's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prorl.metrics import read_jsonl

pytestmark = pytest.mark.ray


def test_two_node_cluster_joined_by_address_spreads_workers(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 3, "node_ip_address": "127.0.0.1"}
    )
    try:
        cluster.add_node(num_cpus=3, node_ip_address="127.0.0.1")
        run = tmp_path / "run"
        # the real CLI as a user runs it against a running cluster (scale.address), with
        # every group's bundles on distinct nodes (STRICT_SPREAD)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "prorl.cli",
                "train",
                "--preset",
                "debug",
                "--run-dir",
                str(run),
                "steps=2",
                "scale.backend=ray",
                f"scale.address={cluster.address}",
                "scale.placement=STRICT_SPREAD",
                "scale.rollout_workers=2",
                "scale.verifier_workers=2",
                "scale.learner_procs=2",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "RAY_memory_monitor_refresh_ms": "0",
                # this sandbox refuses connections to its own non-loopback address, to which
                # ray.init rewrites a 127.0.0.1 address unless told it runs no real cluster
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            },
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "learner ranks on 2 node(s)" in proc.stdout
        nodes = {n.node_id for n in cluster.list_all_nodes()}
        assert len(nodes) == 2
        placed = [e for e in read_jsonl(run / "events.jsonl") if e["event"] == "placement"]
        assert len(placed) == 1
        p = placed[0]
        for kind in ("rollout", "verifier"):  # STRICT_SPREAD: one node per bundle
            assert {w["node"] for w in p[kind]} == nodes, (kind, p[kind])
        assert len(p["learner"]) == 2 and {w["node"] for w in p["learner"]} <= nodes
        assert p["learner"][0]["device"] == "cpu" and p["nodes"] == 2
        rows = [r for r in read_jsonl(run / "metrics.jsonl") if "train/reward" in r]
        assert [r["step"] for r in rows] == [1, 2]
    finally:
        cluster.shutdown()
