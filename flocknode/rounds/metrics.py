"""What the round engine did, for status, /metrics and the cluster summary.

``RoundMetrics`` is plain state the round paths append to. Its counters are
declared once below (``COUNTERS``: name, help, label name if any), the way a
Prometheus registry declares them: ``inc`` refuses a name that is not
declared, or a label value where none is declared (and the other way round),
so a counter's name never carries a value and /metrics exports one family per
labelled counter (``flocknode_<name>{<label>}``) and the plain ones as
``flocknode_round_events{event}``. Chain transactions
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


@dataclass(frozen=True)
class CounterSpec:
    """A round-engine counter: its name, what it counts, its label name ("" for none)."""

    name: str
    doc: str
    label: str = ""


COUNTERS = {
    c.name: c
    for c in (
        # labelled: one /metrics family each
        CounterSpec(
            "engine_errors",
            "Failures a round service survived (counted, logged, went on), by where",
            "where",
        ),
        CounterSpec("keeper_calls", "Keeper transactions this node sent, by action", "action"),
        CounterSpec("worker_failures", "Task worker calls that failed, by reason", "reason"),
        # plain: flocknode_round_events{event}
        CounterSpec("chain_errors", "Chain reads that failed (retried)"),
        CounterSpec("stale_chain_reads", "Chain answers older than the node's view (ignored)"),
        CounterSpec("status_errors", "Status snapshots that could not be built"),
        CounterSpec("role_no_model", "Roles given up without the global model"),
        CounterSpec("role_errors", "Role runs that raised (retried while the phase lasted)"),
        CounterSpec("role_given_up", "Roles given up: phase closed or retries ran out"),
        CounterSpec("gossip_published", "Proposer announcements and key wraps published"),
        CounterSpec("gossip_publish_failed", "Role gossip that could not be published"),
        CounterSpec("seat_wrong_size", "Seats rejected: size claim not the envelope size"),
        CounterSpec("relay_wrap_failed", "Key relays not wrapped (a box key refused)"),
        CounterSpec("key_relays_published", "Key relays published to the other voters"),
        CounterSpec("votes_base_unavailable", "Votes cast without the base model"),
        CounterSpec(
            "votes_abstained_cut_off",
            "Votes not cast: no base model, and most of the round's seat holders unreachable",
        ),
        CounterSpec("store_prune_errors", "Store prunes that failed (retried next round)"),
        CounterSpec("store_pruned_objects", "Store objects pruned"),
        CounterSpec("store_pruned_bytes", "Bytes the store pruning freed"),
        CounterSpec("journal_pruned_records", "Journal records pruned"),
        CounterSpec(
            "tx_rebroadcast", "Own transactions a chain reorganisation dropped, sent again"
        ),
    )
}


@dataclass
class RoundMetrics:
    counters: Counter[str] = field(default_factory=Counter)  # plain counters by name
    labelled: dict[str, Counter[str]] = field(default_factory=dict)  # name -> label value -> n
    # fixed-size histograms, not lists: a node runs for weeks of rounds
    train_seconds: Timing = field(default_factory=lambda: Timing(WORK_BUCKETS))
    eval_seconds: Timing = field(default_factory=lambda: Timing(WORK_BUCKETS))
    roles: list[dict[str, Any]] = field(default_factory=list)  # role history, last KEEP_HISTORY
    accuracy: dict[int, float] = field(default_factory=dict)  # round -> test acc, last KEEP_HISTORY
    tx: TxStats = field(default_factory=TxStats)

    def inc(self, name: str, label: str = "", n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (for ``label`` if it is a labelled counter).

        ValueError for an undeclared name or a label that does not fit its declaration.
        """
        spec = COUNTERS.get(name)
        if spec is None:
            raise ValueError(f"undeclared round counter {name!r}")
        if bool(spec.label) != bool(label):
            raise ValueError(f"round counter {name!r} takes label {spec.label!r}, got {label!r}")
        if label:
            self.labelled.setdefault(name, Counter())[label] += n
        else:
            self.counters[name] += n

    def get(self, name: str, label: str = "") -> int:
        if label:
            return self.labelled.get(name, Counter())[label]
        return self.counters[name]

    def total(self, name: str) -> int:
        """A labelled counter summed over its labels (a plain counter's value)."""
        return sum(self.labelled.get(name, Counter()).values()) + self.counters[name]

    def by_label(self) -> dict[str, dict[str, int]]:
        """The labelled counters: ``{name: {label value: n}}`` (JSON form for the status)."""
        return {k: dict(sorted(c.items())) for k, c in sorted(self.labelled.items()) if c}

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
