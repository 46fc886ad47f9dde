"""The ``clusters`` and ``chaos`` marks: the tests that run whole clusters of
``flocknode run`` processes against phase deadlines (``chaos``: those that
inject faults into them, docs/protocol.md "Faults and the promises kept under
them").

They wait on the chain's clock far more than they compute, and every other test
computes far more than it waits, so ``make test`` runs the three sets side by
side in three pytest processes (``-m clusters``, ``-m chaos`` and ``-m "not
clusters and not chaos"``, the last at a lower CPU priority so the clusters'
nodes meet their deadlines as they would alone). Within a lane the tests run
one at a time in file order: the operator tests share one cluster and rely on
that order.
"""

from __future__ import annotations

import pytest

CLUSTER_PATHS = (
    "tests/integration/operators/",
    "tests/integration/rounds/test_cluster_",
    "tests/integration/store/test_retention_cluster.py",
)


CHAOS_PATHS = ("tests/integration/rounds/test_cluster_chaos",)
# One cluster run per fault kind (partition, rpc, join/leave, reorg, latency),
# marked ``chaos_kinds`` for ``make test-chaos``. Of these only reorg is in make
# test's chaos lane too (beside the ``cluster chaos`` kill/pause run): with
# every kind in it the chaos lane ran for 515 s and ``make test`` took 15.5 to
# 17.5 minutes on fresh clones. The other lane keeps the lower-level tests of
# each kind (p2p partition, the relay, the RPC fault proxy, chain reorgs).
CHAOS_KIND_PATHS = tuple(
    f"tests/integration/rounds/test_cluster_chaos_{kind}.py"
    for kind in ("partition", "rpc", "churn", "reorg", "latency")
)
CHAOS_KIND_ONLY_PATHS = tuple(
    f"tests/integration/rounds/test_cluster_chaos_{kind}.py"
    for kind in ("partition", "rpc", "churn", "latency")
)


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.nodeid.startswith(CHAOS_KIND_PATHS):
        item.add_marker(pytest.mark.chaos_kinds)
        if item.nodeid.startswith(CHAOS_KIND_ONLY_PATHS):
            return
    if item.nodeid.startswith(CHAOS_PATHS):
        item.add_marker(pytest.mark.chaos)
    elif item.nodeid.startswith(CLUSTER_PATHS):
        item.add_marker(pytest.mark.clusters)
