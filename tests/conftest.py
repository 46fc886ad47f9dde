"""The ``clusters`` mark: the tests that run whole clusters of ``flocknode run``
processes against phase deadlines.

They wait on the chain's clock far more than they compute, and every other test
computes far more than it waits, so ``make test`` runs the two sets side by side
in two pytest processes (``-m clusters`` and ``-m "not clusters"``, the second
at a lower CPU priority so the clusters' nodes meet their deadlines as they
would alone). Within the clusters lane the tests run one at a time in file
order: the operator tests share one cluster and rely on that order.
"""

from __future__ import annotations

import pytest

CLUSTER_PATHS = (
    "tests/integration/operators/",
    "tests/integration/rounds/test_cluster_",
    "tests/integration/store/test_retention_cluster.py",
)


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.nodeid.startswith(CLUSTER_PATHS):
        item.add_marker(pytest.mark.clusters)
