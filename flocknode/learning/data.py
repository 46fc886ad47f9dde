"""Each node's private data: a held-out test split shared by all, and a shard per node.

The built-in data set is scikit-learn's digits (1,797 8x8 images, 10 classes,
shipped inside the scikit-learn wheel, so it loads offline). The split is a
pure function of the task's data settings, so every node computes the same
partition and takes its own part by ``node_index``:

1. a permutation of all samples with ``seed``; the first
   ``round(test_fraction * N)`` form the test split (the same on every node,
   for reporting);
2. the rest is the training pool, divided among ``num_nodes`` nodes, either
   IID (a permutation cut into near-equal parts) or Dirichlet(alpha) per class
   (the usual non-IID benchmark split: for each class, proportions drawn from
   Dir(alpha) over the nodes), redrawn until every node has at least
   ``MIN_SHARD`` samples;
3. each node's part is shuffled and its first ``ceil(val_fraction * n)``
   samples become that node's private validation split (voters score with it),
   the rest its training split.

Randomness comes from ``numpy.random.RandomState``, whose streams numpy keeps
stable across versions (``Generator`` streams may change), so nodes on
different numpy versions still agree on the partition.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

SplitKind = Literal["iid", "dirichlet"]
MIN_SHARD = 10
_MAX_DRAWS = 1000

IntArray = npt.NDArray[np.int64]


class DataError(ValueError):
    """Data settings that cannot produce a partition (names the setting)."""


@dataclass(frozen=True, eq=False)
class Split:
    """Features (float32, n x d) and integer labels (int64, n)."""

    x: npt.NDArray[np.float32]
    y: IntArray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class NodeData:
    """What one node holds: its training and validation splits, and the shared test split."""

    train: Split
    val: Split
    test: Split
    num_classes: int


@dataclass(frozen=True)
class Partition:
    """Indices into the full data set: the shared test split and each node's (train, val)."""

    test: IntArray
    nodes: tuple[tuple[IntArray, IntArray], ...]


@cache
def load_digits_arrays() -> tuple[npt.NDArray[np.float32], IntArray]:
    """Digits scaled to [0, 1] as float32, labels as int64 (loaded once per process).

    Read straight from the CSV that ships inside the scikit-learn wheel (what
    ``sklearn.datasets.load_digits`` reads), without importing scikit-learn:
    that import alone costs every node about 50 MB of memory.
    """
    raw = np.loadtxt(_digits_csv(), delimiter=",", dtype=np.float64)
    x = (raw[:, :-1] / 16.0).astype(np.float32)
    y = raw[:, -1].astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _digits_csv() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits data set comes with scikit-learn, which is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    if not path.exists():
        raise DataError(f"digits data not found at {path}")
    return path


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


def load_digits_node(
    node_index: int,
    num_nodes: int,
    split: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
) -> NodeData:
    """Node ``node_index``'s part of the digits data set."""
    if not 0 <= node_index < num_nodes:
        raise DataError(f"node_index must be in 0..{num_nodes - 1}, got {node_index}")
    x, y = load_digits_arrays()
    p = partition(y, num_nodes, split, alpha, seed, test_fraction, val_fraction)
    train, val = p.nodes[node_index]
    return NodeData(
        train=Split(x[train], y[train]),
        val=Split(x[val], y[val]),
        test=Split(x[p.test], y[p.test]),
        num_classes=int(y.max()) + 1,
    )
