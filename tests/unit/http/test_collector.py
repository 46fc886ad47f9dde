"""/metrics from a status snapshot, read back with prometheus-client's own parser."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from flocknode.http.collector import FAMILIES, NodeCollector
from flocknode.rounds.metrics import TX_BUCKETS, WORK_BUCKETS, Timing, TxStats, summary
from flocknode.status import NodeStatus


def snapshot() -> dict[str, Any]:
    tx = TxStats()
    for s in (0.02, 0.03, 0.7):
        tx.mined("commitVote", s)
    tx.failed("openRound", "AlreadyElected")
    tx.failed("openRound", "AlreadyElected")
    tx.failed("revealVote", "RpcUnavailable")
    return {
        "wallet": "0xW",
        "peer_id": "12D3",
        "task": "0xT",
        "uptime": 12.5,
        "round": 7,
        "total_rounds": 9,
        "phase": "reveal",
        "role": "proposer",
        "block": 321,
        "holds_global_model": True,
        "peers": ["a", "b", "c"],
        "members": 6,
        "accuracy": {"5": 0.8, "6": 0.9},
        "counters": {"chain_errors": 4, "store_pruned_objects": 2},
        "counters_by_label": {"keeper_calls": {"open": 2}, "engine_errors": {"tick": 1}},
        "p2p": {
            "gossip_accepted": 40,
            "gossip_published{KeyWraps}": 3,
            "gossip_published{ModelAvailable}": 2,
            "gossip_dropped{stale_round}": 5,
            "gossip_dropped{not_member}": 1,
            "bytes_served": 1000,
            "bytes_fetched": 2500,
            "dial{ok}": 4,
        },
        "chain": {"age_seconds": 0.5, "error": ""},
        "stake": {
            "latest": {
                "stake": 150 * 10**18,
                "rewards": 25 * 10**17,
                "slashed": 10**18,
                "pending_unstake": 0,
                "min_stake": 10 * 10**18,
            },
            "history": [],
        },
        "timings": {
            "train": summary([1.2, 3.0, 0.05], WORK_BUCKETS),
            "eval": summary([], WORK_BUCKETS),
            "tx": tx.snapshot(),
        },
    }


def scrape(s: dict[str, Any]) -> dict[str, Any]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(lambda: NodeStatus.from_json(s)))
    text = generate_latest(reg).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value for s in fam.samples if s.name == fam.name + suffix
    }


def test_every_issue_metric_is_exported_with_its_type_and_value() -> None:
    m = scrape(snapshot())
    assert m["flocknode_peers"].type == "gauge" and samples(m["flocknode_peers"])[()] == 3
    assert samples(m["flocknode_gossip_received"], "_total")[()] == 40
    assert samples(m["flocknode_gossip_published"], "_total")[()] == 5  # summed over types
    dropped = samples(m["flocknode_gossip_dropped"], "_total")
    assert dropped == {(("reason", "stale_round"),): 5, (("reason", "not_member"),): 1}
    assert samples(m["flocknode_bytes_sent"], "_total")[()] == 1000
    assert samples(m["flocknode_bytes_received"], "_total")[()] == 2500
    assert samples(m["flocknode_round"])[()] == 7
    phase = samples(m["flocknode_phase"])
    assert phase[(("phase", "reveal"),)] == 1 and sum(phase.values()) == 1
    role = samples(m["flocknode_role"])
    assert role[(("role", "proposer"),)] == 1 and sum(role.values()) == 1
    assert samples(m["flocknode_stake_tokens"])[()] == 150
    assert samples(m["flocknode_rewards_claimable_tokens"])[()] == 2.5
    assert samples(m["flocknode_slashed_tokens"])[()] == 1
    assert samples(m["flocknode_chain_errors"], "_total")[()] == 4
    events = samples(m["flocknode_round_events"], "_total")
    assert events == {(("event", "chain_errors"),): 4, (("event", "store_pruned_objects"),): 2}
    keeper = samples(m["flocknode_keeper_calls"], "_total")
    assert keeper == {(("action", "open"),): 2}
    assert samples(m["flocknode_engine_errors"], "_total") == {(("where", "tick"),): 1}
    assert samples(m["flocknode_global_model_accuracy"])[()] == 0.9
    assert samples(m["flocknode_ready"])[()] == 1


def test_histograms_are_cumulative_and_end_in_inf() -> None:
    m = scrape(snapshot())
    train = m["flocknode_train_seconds"]
    assert train.type == "histogram"
    buckets = samples(train, "_bucket")
    assert buckets[(("le", "0.1"),)] == 1 and buckets[(("le", "5.0"),)] == 3
    assert buckets[(("le", "+Inf"),)] == 3 and samples(train, "_count")[()] == 3
    assert abs(samples(train, "_sum")[()] - 4.25) < 1e-9
    values = [v for _, v in sorted(buckets.items(), key=lambda kv: float(kv[0][0][1]))]
    assert values == sorted(values)
    tx = m["flocknode_chain_tx_seconds"]
    assert samples(tx, "_count")[(("action", "commitVote"),)] == 3
    assert samples(tx, "_bucket")[(("action", "commitVote"), ("le", "0.05"))] == 2
    fails = samples(m["flocknode_chain_tx_failures"], "_total")
    assert fails == {
        (("action", "openRound"), ("reason", "AlreadyElected")): 2,
        (("action", "revealVote"), ("reason", "RpcUnavailable")): 1,
    }


def test_a_fresh_node_exports_without_errors() -> None:
    m = scrape({"chain": {"age_seconds": None, "error": ""}, "p2p": {}, "counters": {}})
    assert samples(m["flocknode_ready"])[()] == 0
    assert "flocknode_stake_tokens" not in m  # nothing sampled yet: no made-up zero


def test_p2p_keys_and_timing_accumulator() -> None:
    m = scrape({**snapshot(), "p2p": {"a{b}": 1, "c": 2, "bad key{": 3}})
    every = samples(m["flocknode_p2p_events"], "_total")
    assert every == {(("event", "a"), ("reason", "b")): 1, (("event", "c"), ("reason", "")): 2}
    t = Timing(TX_BUCKETS)
    for v in (0.01, 0.01, 200.0):
        t.observe(v)
    snap = t.snapshot()
    assert snap["count"] == 3 and snap["buckets"][0] == [0.01, 2]  # le is inclusive
    assert snap["buckets"][-1] == [TX_BUCKETS[-1], 2]  # 200 s only in +Inf
    assert summary([], WORK_BUCKETS) == {
        "count": 0,
        "sum": 0.0,
        "buckets": [[b, 0] for b in WORK_BUCKETS],
    }


def test_families_are_declared_once_and_a_name_clash_fails_at_register() -> None:
    for s in (NodeStatus(), NodeStatus.from_json(snapshot())):
        collector = NodeCollector(lambda s=s: s)
        described = {(m.name, m.type) for m in collector.describe()}
        assert {(m.name, m.type) for m in collector.collect()} <= described
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(lambda: NodeStatus()))
    with pytest.raises(ValueError, match="Duplicated"):
        reg.register(NodeCollector(lambda: NodeStatus()))
