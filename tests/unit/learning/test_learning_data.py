"""Testers' shards: disjoint, complete, deterministic, non-IID when asked, written as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flocknode.learning import DataError, DigitsMLP, partition, shard_in_memory, write_shards
from flocknode.learning.builtin import load_digits_arrays
from flocknode.learning.data import MIN_SHARD


def _labels() -> np.ndarray:
    return load_digits_arrays()[1]


@pytest.mark.parametrize("split", ["iid", "dirichlet"])
@pytest.mark.parametrize("num_nodes", [1, 3, 10])
def test_shards_are_disjoint_and_cover_the_training_set(split: str, num_nodes: int) -> None:
    y = _labels()
    p = partition(y, num_nodes, split, 0.5, seed=4, test_fraction=0.2, val_fraction=0.2)
    parts = [p.test] + [a for node in p.nodes for a in node]
    joined = np.concatenate(parts)
    assert len(joined) == len(y) == len(set(joined.tolist()))  # disjoint and complete
    assert len(p.test) == round(0.2 * len(y))
    for train, val in p.nodes:
        assert len(train) + len(val) >= MIN_SHARD
        assert len(val) == int(np.ceil(0.2 * (len(train) + len(val))))


def test_every_node_sees_the_same_test_split_and_its_own_shard() -> None:
    data = DigitsMLP().reference_data()
    nodes = [shard_in_memory(data, i, 5, "dirichlet", 0.5, seed=1) for i in range(5)]
    for _, test in nodes[1:]:
        assert np.array_equal(test.x.numpy(), nodes[0][1].x.numpy())
        assert np.array_equal(test.y.numpy(), nodes[0][1].y.numpy())
    assert sum(len(mine) for mine, _ in nodes) + len(nodes[0][1]) == 1797
    mine = nodes[0][0]
    assert mine.x.dtype == torch.float32 and mine.y.dtype == torch.int64
    assert mine.x.min() >= 0.0 and mine.x.max() <= 1.0


def test_written_shards_read_back_through_the_participants_loader(tmp_path: Path) -> None:
    task = DigitsMLP()
    shards = write_shards(task, tmp_path, 3, "dirichlet", 0.5, seed=2)
    data = task.reference_data()
    for i, d in enumerate(shards.nodes):
        assert (d / "digits.csv").is_file()
        mine, test = shard_in_memory(data, i, 3, "dirichlet", 0.5, seed=2)
        loaded = task.load_data(d)
        assert torch.equal(loaded.x, mine.x) and torch.equal(loaded.y, mine.y)
        assert len(loaded) == shards.sizes[i]
    assert torch.equal(task.load_data(shards.test).y, test.y)


def test_dirichlet_split_is_deterministic_and_depends_on_the_seed() -> None:
    y = _labels()
    a = partition(y, 10, "dirichlet", 0.5, 7, 0.2, 0.2)
    b = partition(y, 10, "dirichlet", 0.5, 7, 0.2, 0.2)
    c = partition(y, 10, "dirichlet", 0.5, 8, 0.2, 0.2)
    flat = lambda p: [x.tolist() for node in p.nodes for x in node]  # noqa: E731
    assert flat(a) == flat(b)
    assert flat(a) != flat(c)


def test_dirichlet_split_is_skewed_and_iid_is_not() -> None:
    y = _labels()

    def skew(split: str) -> float:
        p = partition(y, 10, split, 0.5, 3, 0.2, 0.0)
        # mean over nodes of the largest class share in the node's shard
        return float(np.mean([np.bincount(y[t], minlength=10).max() / len(t) for t, _ in p.nodes]))

    assert skew("iid") < 0.2
    assert skew("dirichlet") > 0.3


def test_bad_data_settings_are_refused() -> None:
    y = _labels()
    with pytest.raises(DataError, match="node_index"):
        shard_in_memory(DigitsMLP().reference_data(), 5, 5)
    with pytest.raises(DataError, match="split"):
        partition(y, 2, "pathological", 0.5, 0, 0.2, 0.2)
    with pytest.raises(DataError, match="cannot give"):
        partition(y, 500, "iid", 0.5, 0, 0.2, 0.2)
    with pytest.raises(DataError, match="Dirichlet"):
        partition(y[:160], 12, "dirichlet", 0.01, 0, 0.2, 0.2)
