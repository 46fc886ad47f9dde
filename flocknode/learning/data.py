"""Testers' shards: a data set cut into a shared test split and one part per node.

Not part of the protocol: a participant's data is their own files (``[data]
path``). ``flocknode cluster up`` and the benchmarks use this to give each
test node a part of a task's reference data set (``write_shards`` writes each
part in the task's format, so the nodes read it through the participant's
loading path). The partition is a pure function of its settings:

1. a permutation of all samples with ``seed``; the first
   ``round(test_fraction * N)`` form the test split (the same on every node,
   for reporting);
2. the rest is the training pool, divided among ``num_nodes`` nodes, either
   IID (a permutation cut into near-equal parts) or Dirichlet(alpha) per class
   (the usual non-IID benchmark split: for each class, proportions drawn from
   Dir(alpha) over the nodes), redrawn until every node has at least
   ``MIN_SHARD`` samples;
3. each node's part is shuffled and its first ``ceil(val_fraction * n)``
   samples become that node's validation split, the rest its training split
   (``write_shards`` passes ``val_fraction=0``: a node splits its own files,
   ``flocknode.learning.task.private_split``).

Randomness comes from ``numpy.random.RandomState``, whose streams numpy keeps
stable across versions (``Generator`` streams may change), so nodes on
different numpy versions still agree on the partition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from flocknode.learning.task import DataError, Samples, Task

SplitKind = Literal["iid", "dirichlet"]
MIN_SHARD = 10
_MAX_DRAWS = 1000

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Partition:
    """Indices into the full data set: the shared test split and each node's (train, val)."""

    test: IntArray
    nodes: tuple[tuple[IntArray, IntArray], ...]


def partition(
    labels: IntArray,
    num_nodes: int,
    split: str,
    alpha: float,
    seed: int,
    test_fraction: float,
    val_fraction: float,
) -> Partition:
    """The whole partition of a data set with these labels (pure, deterministic)."""
    n = int(labels.shape[0])
    if num_nodes < 1:
        raise DataError("num_nodes must be >= 1")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError("test_fraction must be in [0, 1)")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError("val_fraction must be in [0, 1)")
    rs = np.random.RandomState(seed % 2**32)
    order = rs.permutation(n).astype(np.int64)
    n_test = round(test_fraction * n)
    test, pool = order[:n_test], order[n_test:]
    if len(pool) < num_nodes * MIN_SHARD:
        raise DataError(
            f"{len(pool)} training samples cannot give {num_nodes} nodes {MIN_SHARD} samples each"
        )
    if split == "iid":
        parts = [np.sort(p) for p in np.array_split(rs.permutation(pool), num_nodes)]
    elif split == "dirichlet":
        if not (alpha > 0 and math.isfinite(alpha)):
            raise DataError("alpha must be a positive number")
        parts = _dirichlet_parts(rs, pool, labels, num_nodes, alpha)
    else:
        raise DataError(f"split must be 'iid' or 'dirichlet', not {split!r}")
    nodes = []
    for part in parts:
        shuffled = rs.permutation(part).astype(np.int64)
        n_val = math.ceil(val_fraction * len(shuffled))
        nodes.append((np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])))
    return Partition(test=np.sort(test), nodes=tuple(nodes))


def _dirichlet_parts(
    rs: np.random.RandomState, pool: IntArray, labels: IntArray, num_nodes: int, alpha: float
) -> list[IntArray]:
    classes = np.unique(labels[pool])
    for _ in range(_MAX_DRAWS):
        buckets: list[list[IntArray]] = [[] for _ in range(num_nodes)]
        for c in classes.tolist():
            members = rs.permutation(pool[labels[pool] == c])
            shares = rs.dirichlet(np.full(num_nodes, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for node, chunk in enumerate(np.split(members, cuts)):
                buckets[node].append(chunk)
        parts = [np.sort(np.concatenate(b)).astype(np.int64) for b in buckets]
        if min(len(p) for p in parts) >= MIN_SHARD:
            return parts
    raise DataError(
        f"Dirichlet(alpha={alpha}) gave a node fewer than {MIN_SHARD} samples "
        f"in {_MAX_DRAWS} draws; use more data, fewer nodes or a larger alpha"
    )


@dataclass(frozen=True)
class Shards:
    """Where ``write_shards`` put each node's files and the shared test split."""

    nodes: tuple[Path, ...]
    test: Path
    sizes: tuple[int, ...]


def write_shards(
    task: Task,
    directory: Path,
    num_nodes: int,
    split: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Shards:
    """Write ``node-<i>/`` (each node's part) and ``test/`` under ``directory``."""
    data = task.reference_data()
    p = partition(data.y.numpy(), num_nodes, split, alpha, seed, test_fraction, 0.0)
    nodes = []
    for i, (train, _) in enumerate(p.nodes):
        d = Path(directory) / f"node-{i}"
        task.write_data(d, data.subset(train))
        nodes.append(d)
    test = Path(directory) / "test"
    task.write_data(test, data.subset(p.test))
    return Shards(tuple(nodes), test, tuple(len(t) for t, _ in p.nodes))


def shard_in_memory(
    data: Samples,
    node_index: int,
    num_nodes: int,
    split: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> tuple[Samples, Samples]:
    """Node ``node_index``'s part and the test split, without files (benchmarks, tests)."""
    if not 0 <= node_index < num_nodes:
        raise DataError(f"node_index must be in 0..{num_nodes - 1}, got {node_index}")
    p = partition(data.y.numpy(), num_nodes, split, alpha, seed, test_fraction, 0.0)
    return data.subset(p.nodes[node_index][0]), data.subset(p.test)
