"""Retention in running nodes: a real anvil and two ``flocknode run`` processes.

With ``keep_rounds = 2`` the nodes prune after each finished round: once round 5
is finished, nothing of rounds 1 and 2 (update blobs, aggregates, models, the
initial model) is left in any store except the current global model and the
newest applied ones, and the journal holds only rounds 4 and 5 (older records
trimmed to the model they applied). Every node still holds the final model, and a node
killed and restarted on its pruned data dir comes back ready.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from flocknode.cluster.launcher import ClusterSpec, NodeInfo, node_status
from flocknode.store.journal import RoundRecord
from tests.integration.rounds.harness import Harness, cluster

pytestmark = pytest.mark.integration

KEEP = 2
ROUNDS = 5
OLD = ROUNDS - KEEP  # rounds 1..OLD are outside the window at the end
# An object is dated by the round in which a prune first saw it: one made in
# round r and first seen once round r + 1 opened may stay one round longer.
GONE = OLD - 1
SPEC = ClusterSpec(
    nodes=2,
    rounds=ROUNDS,
    proposers=1,
    voters=1,
    train_seconds=10,
    commit_seconds=8,
    reveal_seconds=6,
)


def set_keep_rounds(h: Harness, keep: int) -> None:
    for n in h.state.nodes:
        toml = Path(n.data_dir) / "node.toml"
        text = toml.read_text()
        assert "keep_rounds = 16" in text, "the init template documents the key"
        toml.write_text(text.replace("keep_rounds = 16", f"keep_rounds = {keep}"))


def journal(n: NodeInfo) -> dict[int, RoundRecord]:
    out = {}
    for p in (Path(n.data_dir) / "journal").glob("round-*.json"):
        rec = RoundRecord.from_json(json.loads(p.read_text()))
        out[rec.round] = rec
    return out


def _counters(n: NodeInfo) -> dict[str, int]:
    s = node_status(n).status
    return dict(s.counters) if s else {}


def objects(n: NodeInfo) -> set[bytes]:
    names = (p.name for p in (Path(n.data_dir) / "store").iterdir())
    return {bytes.fromhex(name) for name in names if len(name) == 64}


def problems(n: NodeInfo, old_objects: set[bytes], final: bytes) -> list[Any]:
    """What is left that retention should have removed (empty once it has)."""
    out: list[Any] = []
    if "store_pruned_objects" not in _counters(n):
        out.append("no prune yet")
    recs = journal(n)
    applied = [bytes.fromhex(recs[r].applied_model) for r in sorted(recs, reverse=True)]
    applied = [m for m in applied if m][:KEEP]
    for r, rec in recs.items():
        if r <= OLD and rec != RoundRecord(r, applied_model=rec.applied_model):
            out.append(("old record not trimmed", r))
    leftover = (old_objects & objects(n)) - {final, *applied}
    out += [("old object", c.hex()[:12]) for c in sorted(leftover)]
    return out


def settled(n: NodeInfo, old_objects: set[bytes], final: bytes) -> bool:
    return not problems(n, old_objects, final)


def test_nodes_keep_a_bounded_store_and_restart_on_it(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", SPEC, start=False) as h:
        set_keep_rounds(h, KEEP)
        h.start()
        final = h.wait_finalized(ROUNDS, timeout=240).global_model_hash_after
        names = [n.name for n in h.state.nodes]
        h.wait_all_hold(final, names)
        # Everything rounds 1..GONE put in a store, read back from the chain.
        old_objects = {h.client.params().initial_model_hash}
        for r in range(1, GONE + 1):
            v = h.client.get_round(r)
            old_objects |= {u.blob_id for u in v.updates if u.submitted}
            old_objects |= {x.aggregate_hash for x in v.votes if x.revealed}
        for n in h.state.nodes:
            with contextlib.suppress(AssertionError):  # the assert below says what is left
                h.wait(f"{n.name} to prune", functools.partial(settled, n, old_objects, final), 30)
            assert problems(n, old_objects, final) == [], n.name
            assert final in objects(n)
            assert "store pruned round=" in (Path(n.data_dir) / "node.log").read_text()

        # A node killed and restarted on its pruned data dir reads chain + journal,
        # holds the final model again and prunes again without an error.
        h.kill("node-0")
        (Path(h.state.node("node-0").data_dir) / "status.json").unlink()
        h.start("node-0")
        h.wait_all_hold(final, ["node-0"], timeout=60)

        def pruned_again() -> bool:
            return "store_pruned_objects" in _counters(h.state.node("node-0"))

        h.wait("node-0 to prune after its restart", pruned_again, 30, poll=0.25)
        counters = _counters(h.state.node("node-0"))
        assert "store_prune_errors" not in counters, counters
