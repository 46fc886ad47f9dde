"""The operator tests share one real cluster (package scope): see operators_cluster.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flocknode.cluster.launcher import ClusterSpec, _alive, create_cluster, down, node_status
from tests.integration.operators.operators_cluster import OperatorCluster

# 1 proposer and 2 voters in 4 nodes: a round reaches quorum only if both voters
# reveal, so a vote lost to a SIGTERM shows as a round without a winner. Phases
# end early once everyone acted, so the long deadlines cost time only while a
# node restarts (10-35 s here with 4 nodes on 2 cores; a voter must be back
# 0.4 * commit_seconds before the commit deadline to collect the updates).
# The three SIGTERM cases take round 1 and then, each, the round after the one
# current once the restarted node is up; rounds go on meanwhile (a restarted
# voter reveals before its task worker is ready), so 8 rounds leave room.
# 8000 local steps make training last a few seconds, so a SIGTERM can land in
# it (about 1 s per 3000 steps here).
SPEC = ClusterSpec(
    nodes=4,
    rounds=8,
    proposers=1,
    voters=2,
    train_seconds=60,
    commit_seconds=60,
    reveal_seconds=45,
    settings_overrides=(("training", "local_steps", 8000),),
)


@pytest.fixture(scope="package")
def op_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorCluster]:
    directory: Path = tmp_path_factory.mktemp("operators") / "cluster"
    state = create_cluster(directory, SPEC, progress=lambda line: None)
    h = OperatorCluster(state)
    try:
        h.start()
        yield h
    finally:
        stopped = down(state)
    # down returns only once every process it started is gone (anvil included)
    pids = [state.anvil_pid, *(n.pid for n in state.nodes)]
    assert [p for p in pids if p and _alive(p)] == [], stopped
    assert {s.name for s in stopped} == {"anvil", *(n.name for n in state.nodes)}


@pytest.fixture(scope="package")
def settled(op_cluster: OperatorCluster) -> OperatorCluster:
    """The cluster after its last round: every node holds the final model and is ready."""
    h = op_cluster
    final = h.wait_finalized(SPEC.rounds, timeout=400)
    names = [n.name for n in h.state.nodes]
    h.wait_all_hold(final.global_model_hash_after, names, timeout=120)

    def all_see_the_end() -> bool:
        docs = [node_status(n).status for n in h.state.nodes]
        return all(
            d is not None and d.round.number == SPEC.rounds and d.round.phase == "finalized"
            for d in docs
        )

    h.wait("every node to see the last round finalized", all_see_the_end, 60, poll=0.25)
    return h
