"""What the round engine did, for status, /metrics and the cluster summary.

``RoundMetrics`` is plain state the round paths append to. Chain transactions
are timed where every one of them passes (``MeteredConnection.transact``, in
worker threads, hence the lock in :class:`TxStats`). ``summary()`` turns a list
of durations into cumulative histogram buckets for the status snapshot, so
/metrics can export histograms without keeping a second copy of the numbers.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flocknode.chain.contracts import ChainConnection
from flocknode.chain.errors import ContractRevert
from flocknode.chain.txsend import Receipt

# Upper bounds (seconds) of the histogram buckets; +Inf is implied.
WORK_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
KEEP_HISTORY = 200  # rounds of role and accuracy history kept for status and plots
TX_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def summary(values: Iterable[float], buckets: Sequence[float]) -> dict[str, Any]:
    """``{"count", "sum", "buckets": [[le, cumulative count], ...]}`` of ``values``."""
    timing = Timing(tuple(buckets))
    for v in values:
        timing.observe(v)
    return timing.snapshot()


@dataclass
class Timing:
    """A fixed-size histogram accumulator (count, sum, per-bucket counts)."""

    buckets: tuple[float, ...] = TX_BUCKETS
    count: int = 0
    total: float = 0.0
    counts: list[int] = field(default_factory=list)

    def observe(self, seconds: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        self.count += 1
        self.total += seconds
        i = bisect.bisect_left(self.buckets, seconds)
        if i < len(self.counts):
            self.counts[i] += 1

    def snapshot(self) -> dict[str, Any]:
        counts = self.counts or [0] * len(self.buckets)
        cumulative, running = [], 0
        for le, c in zip(self.buckets, counts, strict=True):
            running += c
            cumulative.append([le, running])
        return {"count": self.count, "sum": self.total, "buckets": cumulative}


_ACTION = re.compile(r"^[A-Za-z]+")


def action_name(action: str) -> str:
    """``"commitVote(3)"`` -> ``"commitVote"``; ``"send 5 wei to 0x.."`` -> ``"send"``."""
    m = _ACTION.match(action)
    return m.group(0) if m else "other"


def failure_reason(exc: BaseException) -> str:
    """A short label: the contract error's name for reverts, else the error class."""
    if isinstance(exc, ContractRevert) and exc.name:
        return exc.name
    return type(exc).__name__


class TxStats:
    """Latency of mined transactions and failures, per action. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency: dict[str, Timing] = {}
        self._failures: Counter[tuple[str, str]] = Counter()

    def mined(self, action: str, seconds: float) -> None:
        with self._lock:
            self._latency.setdefault(action, Timing(TX_BUCKETS)).observe(seconds)

    def failed(self, action: str, reason: str) -> None:
        with self._lock:
            self._failures[(action, reason)] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency": {a: t.snapshot() for a, t in sorted(self._latency.items())},
                "failures": [
                    {"action": a, "reason": r, "count": n}
                    for (a, r), n in sorted(self._failures.items())
                ],
            }


@dataclass
class RoundMetrics:
    counters: Counter[str] = field(default_factory=Counter)
    # fixed-size histograms, not lists: a node runs for weeks of rounds
    train_seconds: Timing = field(default_factory=lambda: Timing(WORK_BUCKETS))
    eval_seconds: Timing = field(default_factory=lambda: Timing(WORK_BUCKETS))
    roles: list[dict[str, Any]] = field(default_factory=list)  # role history, last KEEP_HISTORY
    accuracy: dict[int, float] = field(default_factory=dict)  # round -> test acc, last KEEP_HISTORY
    tx: TxStats = field(default_factory=TxStats)

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def role(self, round: int, role: str, seat: int) -> None:
        if not any(r["round"] == round for r in self.roles):
            self.roles.append({"round": round, "role": role, "seat": seat, "at": time.time()})
            del self.roles[:-KEEP_HISTORY]

    def model_accuracy(self, round: int, accuracy: float) -> None:
        self.accuracy[round] = accuracy
        for r in sorted(self.accuracy)[:-KEEP_HISTORY]:
            del self.accuracy[r]

    def timings(self) -> dict[str, Any]:
        """Histograms of training and evaluation time, and the chain transactions."""
        return {
            "train": self.train_seconds.snapshot(),
            "eval": self.eval_seconds.snapshot(),
            "tx": self.tx.snapshot(),
        }


class MeteredConnection(ChainConnection):
    """A ChainConnection that times every transaction and counts the failed ones.

    Every transaction of a node passes ``transact`` (TaskClient._tx, send_eth),
    so this is the one place that sees them all.
    """

    def __init__(self, *args: Any, tx_stats: TxStats, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tx_stats = tx_stats

    def transact(self, fn: Any, action: str) -> Receipt:
        name = action_name(action)
        # a duration measured in the worker thread that sends the transaction
        # (trio's clock is not readable there); reported, never decided on
        t0 = time.monotonic()
        try:
            receipt = super().transact(fn, action)
        except Exception as e:  # counted whatever it is (bad RPC data too), then raised
            self.tx_stats.failed(name, failure_reason(e))
            raise
        self.tx_stats.mined(name, time.monotonic() - t0)
        return receipt
