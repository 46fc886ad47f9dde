"""The stake/rewards history keeps changes and a heartbeat, bounded."""

from __future__ import annotations

from typing import Any

from flocknode.http.history import StakeHistory
from flocknode.status import StakeRecord


def sample(at: float, stake: int = 100, rewards: int = 0) -> StakeRecord:
    return StakeRecord(at=at, round=1, stake=stake, rewards=rewards, slashed=0, pending_unstake=0)


def history(**kw: Any) -> StakeHistory:
    return StakeHistory(client=None, wallet="0xW", **kw)  # type: ignore[arg-type]


def test_keeps_changes_and_a_sample_every_keep_every_seconds() -> None:
    h = history(keep_every=600.0)
    h.record(sample(0))
    h.record(sample(10))  # same values, soon after: not kept
    h.record(sample(20, rewards=5))  # changed: kept
    h.record(sample(30, rewards=5))
    h.record(sample(620, rewards=5))  # unchanged but 600 s after the last kept one
    assert [s.at for s in h.samples] == [0, 20, 620]
    assert h.latest is not None and h.latest.at == 620
    snap = h.snapshot()
    assert snap.latest is not None and snap.latest.rewards == 5 and len(snap.history) == 3


def test_history_is_bounded() -> None:
    h = history(maxlen=5)
    for i in range(50):
        h.record(sample(i, stake=i))
    assert len(h.samples) == 5 and h.samples[0].stake == 45
