"""A task with compressed updates, end to end (docs/protocol.md, "Compressed updates"):
real node processes on a real anvil seal top-k 2-bit updates with error feedback,
voters decode them and agree bit for bit, and the model learns."""

from __future__ import annotations

from pathlib import Path

import pytest

from flocknode.aggregation import AggregationSettings
from flocknode.chain.events import Slashed
from flocknode.cluster.launcher import ClusterSpec
from flocknode.rounds.update_form import update_blob_size
from tests.integration.rounds.harness import cluster

pytestmark = pytest.mark.integration

TOPK = AggregationSettings(compression="topk", topk_fraction=0.05, topk_bits=2)


def test_top_k_updates_are_agreed_on_paid_and_learn(tmp_path: Path) -> None:
    spec = ClusterSpec(
        nodes=5,
        rounds=3,
        proposers=3,
        voters=2,
        settings_overrides=tuple(
            ("aggregation", k, v)
            for k, v in TOPK.to_dict().items()
            if k in ("compression", "topk_fraction", "topk_bits")
        ),
    )
    with cluster(tmp_path / "c", spec) as h:
        final = h.wait_finalized(3, timeout=180)
        init = h.monitor.learner.initial_state()
        size = update_blob_size(init, TOPK)
        assert size * 10 < update_blob_size(init)  # digits-mlp at 5%: about 14x fewer
        accepted = 0
        for r in (1, 2, 3):
            v = h.client.get_round(r)
            for up in v.updates:
                if up.submitted:
                    assert up.size == size, f"round {r}: a blob of {up.size} bytes"
            revealed = [vote for vote in v.votes if vote.revealed]
            assert revealed and all(x.aggregate_hash == v.winning_hash for x in revealed), r
            accepted += v.accepted
        assert accepted >= 2, h.tails()
        assert h.events(Slashed) == [], h.tails()
        # each proposer kept its residual (mode 0600) for the next time it proposes
        kept = [p for n in h.state.nodes for p in (Path(n.data_dir) / "residual").rglob("*.flct")]
        assert kept and all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
        assert h.accuracy(final.global_model_hash_after) > h.initial_accuracy() + 0.3
