"""The proposer's error-feedback residual: which round's file is read, what is kept."""

from __future__ import annotations

from pathlib import Path

import torch

from flocknode.store.residual import ResidualStore


def _res(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3,), v)}


def test_a_round_reads_the_newest_residual_of_an_earlier_round(tmp_path: Path) -> None:
    store = ResidualStore(tmp_path / "residual")
    assert store.load(1) is None  # nothing kept yet (no directory either)
    store.save(3, _res(3.0))
    store.save(7, _res(7.0))
    assert store.load(3) is None
    assert torch.equal(store.load(4)["w"], _res(3.0)["w"])  # type: ignore[index]
    assert torch.equal(store.load(8)["w"], _res(7.0)["w"])  # type: ignore[index]


def test_a_round_trained_again_after_a_crash_starts_from_the_same_residual(
    tmp_path: Path,
) -> None:
    store = ResidualStore(tmp_path)
    store.save(4, _res(4.0))
    before = store.load(9)
    store.save(9, _res(9.0))  # round 9 saved its residual, then the node crashed
    again = store.load(9)  # round 9 is trained once more
    assert before is not None and again is not None and torch.equal(again["w"], before["w"])


def test_at_most_two_files_are_kept_and_each_is_private(tmp_path: Path) -> None:
    store = ResidualStore(tmp_path)
    for r in (1, 2, 5, 8):
        store.save(r, _res(float(r)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5.flct", "8.flct"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in tmp_path.iterdir())


def test_an_unreadable_file_is_not_replaced_by_an_older_one(tmp_path: Path) -> None:
    """The older file's values were sent since: adding them again would send them twice."""
    store = ResidualStore(tmp_path)
    store.save(2, _res(2.0))
    store.save(6, _res(6.0))
    (tmp_path / "6.flct").write_bytes(b"torn")
    assert store.load(7) is None
    store.save(8, {"w": torch.full((3,), float("nan"))})  # training diverged
    assert store.load(9) is None
