"""What ``cluster up`` hands its nodes and reports: data paths in node.toml, JSON fields."""

from __future__ import annotations

from pathlib import Path

from flocknode.cluster.launcher import ClusterSpec
from flocknode.cluster.monitor import RoundSummary
from flocknode.learning import DigitsCNN, TaskSettings, write_shards
from flocknode.node import node_learner
from tests.unit.learning.cluster_node import cluster_node_config


def test_a_cluster_node_reads_its_shard_through_the_participant_path(tmp_path: Path) -> None:
    shards = write_shards(DigitsCNN(), tmp_path / "data", 3)
    cfg = cluster_node_config(
        tmp_path / "node-1", ClusterSpec(nodes=3), 1, str(shards.nodes[1]), str(shards.test)
    )
    assert cfg.path(cfg.data.path) == shards.nodes[1] and cfg.data.test_path == str(shards.test)
    learner = node_learner(cfg, TaskSettings.from_dict({"training": {"task": "digits-cnn"}}))
    assert len(learner.data.train) + len(learner.data.val) == shards.sizes[1]
    assert learner.has_test and len(learner.split("test")) == 359


def test_round_json_carries_the_metric_and_the_update_size() -> None:
    r = RoundSummary(3, True, "0xab", "0xab", 0.9, {}, [], [], [], 1.0, update_bytes=19373)
    doc = r.to_json()
    assert doc["metric"] == {"name": "test_accuracy", "value": 0.9}
    assert doc["update_bytes"] == 19373


def test_cluster_isolation_reaches_each_nodes_config(tmp_path: Path) -> None:
    def compute(spec: ClusterSpec) -> str:
        d = tmp_path / f"n-{spec.isolation or 'default'}"
        return cluster_node_config(d, spec, 0, "d", "t", environ={}).compute.isolation

    assert compute(ClusterSpec(nodes=2)) == "namespace"  # the node's default: the jailed worker
    assert compute(ClusterSpec(nodes=2, isolation="none")) == "none"
    assert compute(ClusterSpec(nodes=2, isolation="process")) == "process"
