"""Aggregation a block at a time, and over updates on disk: the same bits.

A voter aggregates updates it wrote to disk (``flocknode.store.spill``) a block
of coordinates at a time; the golden vectors pin the in-memory result, so every
rule must give exactly that result with any block size and from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flocknode.aggregation import RULES, AggregationSettings, aggregate, apply_update, core
from flocknode.aggregation.core import STATS, WEIGHTS, ModelFlat, layout_of
from flocknode.store.spill import SpillDir, SpilledUpdate


def _model(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    return {
        "a.weight": r(50, 7),
        "a.bias": r(7).to(torch.float16),
        "b.weight": r(33).to(torch.bfloat16),
        "bn.running_mean": r(7),
        "bn.running_var": r(7).abs(),
        "bn.num_batches_tracked": torch.tensor(seed, dtype=torch.int64),
        "z.weight": r(0, 3),
    }


BASE = _model(0)
# five updates, one of them far out (the norm check and robust rules have work)
UPDATES = [_model(s, 0.01) for s in (1, 2, 3, 4)] + [_model(9, 0.2)]
SETTINGS = {
    "fedavg": AggregationSettings(rule="fedavg"),
    "median": AggregationSettings(rule="median"),
    "trimmed_mean": AggregationSettings(rule="trimmed_mean", trim_ratio=0.2),
    "multi_krum": AggregationSettings(rule="multi_krum", krum_f=1),
    "centered_clip": AggregationSettings(rule="centered_clip", clip_tau=0.05),
}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


def _spilled(tmp: Path) -> list[SpilledUpdate]:
    layout = layout_of(BASE)
    return [
        SpilledUpdate.write(tmp / f"{i}.f32", u, layout, f"seat {i}") for i, u in enumerate(UPDATES)
    ]


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_gives_the_same_bits_in_blocks_and_from_disk(
    rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = SETTINGS[rule]
    whole = aggregate(BASE, UPDATES, s, scale=None)
    assert whole.used  # the rule ran
    monkeypatch.setattr(core, "BLOCK", 16)  # 350 weights: 22 blocks, entries cut across
    blocks = aggregate(BASE, UPDATES, s, scale=None)
    spill = SpillDir(tmp_path / "spill")
    disk = aggregate(BASE, _spilled(tmp_path), s, scale=None, scratch=spill.scratch(7))
    for r in (blocks, disk):
        assert _same(r.model, whole.model)
        assert (r.norms, r.rejected, r.used, r.selected) == (
            whole.norms,
            whole.rejected,
            whole.used,
            whole.selected,
        )


def test_apply_update_from_disk_matches_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "BLOCK", 16)
    for u, spilled in zip(UPDATES, _spilled(tmp_path), strict=True):
        assert _same(apply_update(BASE, spilled), apply_update(BASE, u))


def test_a_spilled_update_reads_back_its_values_and_is_private(tmp_path: Path) -> None:
    layout = layout_of(BASE)
    (first, *_) = _spilled(tmp_path)
    mem = ModelFlat(UPDATES[0], layout, "u")
    for kind in (WEIGHTS, STATS):
        n = layout.sizes[kind]
        assert np.array_equal(first.read(kind, 0, n), mem.read(kind, 0, n))
        assert np.array_equal(first.read(kind, 3, n - 2), mem.read(kind, 3, n - 2))
    assert [a.tolist() for a in first.integers()] == [a.tolist() for a in mem.integers()]
    assert (first.path.stat().st_mode & 0o777) == 0o600


def test_the_spill_dir_starts_empty_and_clears_a_round(tmp_path: Path) -> None:
    root = tmp_path / "spill"
    left = root / "3" / "0.f32"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"x")  # a crash's leftover
    spill = SpillDir(root)
    assert not left.exists()
    SpilledUpdate.write(spill.seat(4, 1), UPDATES[0], layout_of(BASE), "seat 1")
    assert spill.seat(4, 1).exists()
    spill.clear(4)
    spill.clear(5)  # nothing there: no error
    assert not (root / "4").exists()


def test_an_update_of_another_layout_is_refused_before_it_is_written(tmp_path: Path) -> None:
    bad = dict(UPDATES[0])
    bad["a.weight"] = bad["a.weight"].to(torch.int32)
    with pytest.raises(core.AggregationInputError, match=r"'a\.weight' is torch\.int32"):
        SpilledUpdate.write(tmp_path / "x.f32", bad, layout_of(BASE), "seat 0")
