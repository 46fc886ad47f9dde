"""NodeStatus: the JSON form other processes read round-trips, and a reader of a
partial or foreign file gets empty values or None, never a KeyError."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from flocknode.rounds.metrics import WORK_BUCKETS, TxStats, summary
from flocknode.status import NodeStatus, read_status_file


def full_doc() -> dict[str, Any]:
    tx = TxStats()
    tx.mined("commitVote", 0.02)
    tx.failed("openRound", "AlreadyElected")
    latest = {
        "at": 1700000060.0,
        "round": 4,
        "stake": 150 * 10**18,
        "rewards": 5 * 10**18,
        "slashed": 0,
        "pending_unstake": 0,
    }
    return {
        "wallet": "0xW",
        "peer_id": "12D3KooWpeer",
        "task": "0xT",
        "uptime": 12.5,
        "round": 4,
        "total_rounds": 10,
        "phase": "commit",
        "role": "voter",
        "seat": 2,
        "block": 99,
        "global_model_hash": "0x" + "ab" * 32,
        "holds_global_model": True,
        "complete": False,
        "peers": ["12D3KooWa"],
        "members": 5,
        "roles": [{"round": 4, "role": "voter", "seat": 2, "at": 1700000000.0}],
        "accuracy": {"2": 0.5, "3": 0.75},
        "counters": {"chain_errors": 1},
        "counters_by_label": {"engine_errors": {"tick": 2}},
        "p2p": {"gossip_accepted": 3, "gossip_dropped{stale_round}": 1},
        "last_error": "",
        "behaviour": "honest",
        "chain": {"age_seconds": 0.25, "error": ""},
        "stake": {
            "latest": {**latest, "min_stake": 10 * 10**18},
            "history": [latest],
            "errors": 2,
        },
        "registry": {"ignored": {"no_valid_multiaddr": 1}},
        "timings": {
            "train": summary([1.0, 2.0], WORK_BUCKETS),
            "eval": summary([], WORK_BUCKETS),
            "tx": tx.snapshot(),
        },
        "http": ["http://127.0.0.1:9100"],
    }


def test_the_json_form_round_trips_and_reads_by_attribute() -> None:
    doc = full_doc()
    s = NodeStatus.from_json(json.loads(json.dumps(doc)))
    assert s.to_json() == doc
    assert (s.round.number, s.round.role, s.round.seat) == (4, "voter", 2)
    assert s.model.latest_accuracy == (3, 0.75)
    assert s.stake.latest is not None and s.stake.latest.rewards == 5 * 10**18
    assert s.stake.min_stake == 10 * 10**18
    assert s.timings.train is not None and s.timings.train.count == 2
    assert s.timings.tx_failures[0].reason == "AlreadyElected"
    assert s.counters_by_label["engine_errors"]["tick"] == 2


def test_a_partial_document_reads_as_empty_values() -> None:
    s = NodeStatus.from_json({"round": 3, "peers": ["a"]})
    assert s.round.number == 3 and s.p2p.peers == ("a",)
    assert s.chain.age_seconds is None and not s.model.held and s.stake.latest is None
    assert s.timings.train is None and s.model.latest_accuracy is None


@pytest.mark.parametrize("doc", [[], "x", {"roles": [{"round": "r"}]}, {"accuracy": {"x": 1}}])
def test_a_foreign_document_is_a_value_error(doc: Any) -> None:
    with pytest.raises(ValueError):
        NodeStatus.from_json(doc)


def test_the_status_file_reader_drops_stale_and_broken_files(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert read_status_file(path) is None  # no file
    path.write_text(json.dumps(full_doc()))
    s = read_status_file(path, max_age=60)
    assert s is not None and s.wallet == "0xW"
    old = time.time() - 120
    os.utime(path, (old, old))
    assert read_status_file(path, max_age=60) is None
    assert read_status_file(path) is not None  # no age limit
    path.write_text("{not json")
    assert read_status_file(path) is None
