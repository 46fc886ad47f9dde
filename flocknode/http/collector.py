"""/metrics: a Prometheus collector over the node's status snapshot.

No metric state lives here: every scrape takes one ``NodeStatus``
(``FlockNode.status``) and turns it into metric families. Each family (name,
type, help, label names) is declared once below; ``describe`` hands them to
the registry when the collector is registered, so a clash of names fails
there, and ``collect`` fills the same families with the snapshot's values.
Names follow Prometheus conventions (``_total`` counters, ``_seconds``,
``_tokens``); tokens are whole tokens (18 decimals) as floats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from flocknode.http.readiness import not_ready_reasons
from flocknode.p2p.metrics import P2PCounts
from flocknode.rounds.metrics import COUNTERS
from flocknode.status import Histogram, NodeStatus

TOKEN = 10**18
PHASES = ("none", "seeding", "train", "commit", "reveal", "finalizable", "finalized", "voided")
ROLES = ("proposer", "voter", "none")

Snapshot = Callable[[], NodeStatus]

_KINDS: dict[str, Any] = {
    "gauge": GaugeMetricFamily,
    "counter": CounterMetricFamily,
    "histogram": HistogramMetricFamily,
    "info": InfoMetricFamily,
}


@dataclass(frozen=True)
class Family:
    """One metric family, declared once: its name, type, help text and label names."""

    name: str
    kind: Literal["gauge", "counter", "histogram", "info"]
    doc: str
    labels: tuple[str, ...] = ()

    def empty(self) -> Metric:
        fam: Metric = _KINDS[self.kind](self.name, self.doc, labels=list(self.labels))
        return fam

    def of(self, samples: Sequence[tuple[Sequence[str], float]]) -> Metric:
        """The family with one sample per (label values, value)."""
        fam = self.empty()
        for label_values, value in samples:
            fam.add_metric(list(label_values), value)  # type: ignore[attr-defined]
        return fam

    def value(self, value: float) -> Metric:
        """An unlabelled family with one sample."""
        return self.of([((), value)])

    def histograms(self, items: Sequence[tuple[Sequence[str], Histogram]]) -> Metric:
        fam = self.empty()
        for label_values, h in items:
            buckets = [(_le(le), float(c)) for le, c in h.buckets]
            buckets.append(("+Inf", float(h.count)))
            fam.add_metric(list(label_values), buckets, h.sum)  # type: ignore[attr-defined]
        return fam


def _le(v: float) -> str:
    return repr(float(v))


IDENTITY = Family("flocknode", "info", "This node's identity", ("wallet", "peer_id", "task"))
UPTIME = Family("flocknode_uptime_seconds", "gauge", "Seconds since the node started")
READY = Family("flocknode_ready", "gauge", "1 if /readyz reports ready")
ROUND = Family("flocknode_round", "gauge", "Current round on chain")
TOTAL_ROUNDS = Family("flocknode_total_rounds", "gauge", "Rounds the task runs")
PHASE = Family("flocknode_phase", "gauge", "1 for the current round's phase", ("phase",))
ROLE = Family("flocknode_role", "gauge", "1 for this node's role in the current round", ("role",))
CHAIN_BLOCK = Family("flocknode_chain_block", "gauge", "Latest block read")
CHAIN_READ_AGE = Family(
    "flocknode_chain_read_age_seconds",
    "gauge",
    "Seconds since the last successful chain read (NaN before the first)",
)
HOLDS_MODEL = Family(
    "flocknode_holds_global_model", "gauge", "1 if the node holds the current global model"
)
MODEL_ACCURACY = Family(
    "flocknode_global_model_accuracy",
    "gauge",
    "Test accuracy of the latest global model this node evaluated",
)
MODEL_ROUND = Family(
    "flocknode_global_model_round", "gauge", "Round of the latest global model this node evaluated"
)
ROUND_EVENTS = Family(
    "flocknode_round_events", "counter", "Round engine events by name", ("event",)
)
# One family per labelled round counter (``rounds.metrics.COUNTERS``), e.g.
# ``flocknode_engine_errors{where}``, ``flocknode_keeper_calls{action}``.
LABELLED_ROUND_COUNTERS = {
    c.name: Family(f"flocknode_{c.name}", "counter", c.doc, (c.label,))
    for c in COUNTERS.values()
    if c.label
}
CHAIN_ERRORS = Family(
    "flocknode_chain_errors", "counter", "Chain reads that failed (the engine retried)"
)
REGISTRY_IGNORED = Family(
    "flocknode_registry_ignored",
    "gauge",
    "Registrations (or single multiaddrs) in the latest registry read that the node "
    "ignores, by reason",
    ("reason",),
)
STAKE_SAMPLE_ERRORS = Family(
    "flocknode_stake_sample_errors", "counter", "Stake samples that failed"
)
STAKE = Family("flocknode_stake_tokens", "gauge", "Active stake")
REWARDS = Family("flocknode_rewards_claimable_tokens", "gauge", "Rewards earned, not yet claimed")
SLASHED = Family("flocknode_slashed_tokens", "gauge", "Tokens slashed so far")
PENDING_UNSTAKE = Family("flocknode_pending_unstake_tokens", "gauge", "Stake being withdrawn")
MIN_STAKE = Family("flocknode_min_stake_tokens", "gauge", "The task's minimum stake")
TRAIN_SECONDS = Family("flocknode_train_seconds", "histogram", "Local training time per round")
EVAL_SECONDS = Family("flocknode_eval_seconds", "histogram", "Voter evaluation time per round")
TX_SECONDS = Family(
    "flocknode_chain_tx_seconds",
    "histogram",
    "Send-to-receipt time of mined transactions, by action",
    ("action",),
)
TX_FAILURES = Family(
    "flocknode_chain_tx_failures",
    "counter",
    "Transactions not mined: reverted, refused, out of gas money, RPC down",
    ("action", "reason"),
)
# The p2p families as ``NodeCollector._p2p`` builds them (names, types and
# labels), for ``describe``.
P2P_FAMILIES = (
    Family("flocknode_peers", "gauge", "Connected libp2p peers"),
    Family(
        "flocknode_members",
        "gauge",
        "Registered, staked participants of the task (this node included)",
    ),
    Family("flocknode_gossip_received", "counter", "Gossip messages accepted"),
    Family("flocknode_gossip_published", "counter", "Gossip messages this node sent"),
    Family("flocknode_bytes_sent", "counter", "Bytes of blobs and models served"),
    Family("flocknode_bytes_received", "counter", "Bytes of blobs and models fetched"),
    Family(
        "flocknode_gossip_dropped", "counter", "Gossip messages dropped, by reason", ("reason",)
    ),
    Family(
        "flocknode_p2p_events",
        "counter",
        "Every p2p counter (drops, refusals, dials, fetches), by event and reason",
        ("event", "reason"),
    ),
)
FAMILIES = (
    IDENTITY,
    UPTIME,
    READY,
    ROUND,
    TOTAL_ROUNDS,
    PHASE,
    ROLE,
    CHAIN_BLOCK,
    CHAIN_READ_AGE,
    HOLDS_MODEL,
    MODEL_ACCURACY,
    MODEL_ROUND,
    ROUND_EVENTS,
    *LABELLED_ROUND_COUNTERS.values(),
    CHAIN_ERRORS,
    REGISTRY_IGNORED,
    STAKE_SAMPLE_ERRORS,
    STAKE,
    REWARDS,
    SLASHED,
    PENDING_UNSTAKE,
    MIN_STAKE,
    TRAIN_SECONDS,
    EVAL_SECONDS,
    TX_SECONDS,
    TX_FAILURES,
    *P2P_FAMILIES,
)


class NodeCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        for f in FAMILIES:
            yield f.empty()

    def collect(self) -> Iterator[Any]:
        s = self._snapshot()
        yield from self._identity(s)
        yield from self._p2p(s)
        yield from self._rounds(s)
        yield from self._stake(s)
        yield from self._registry(s)
        yield from self._timings(s)

    def _identity(self, s: NodeStatus) -> Iterator[Any]:
        info = IDENTITY.empty()
        info.add_metric([], {"wallet": s.wallet, "peer_id": s.peer_id, "task": s.task})  # type: ignore[attr-defined]
        yield info
        yield UPTIME.value(s.uptime)
        yield READY.value(0 if not_ready_reasons(s) else 1)

    def _p2p(self, s: NodeStatus) -> Iterator[Any]:
        yield GaugeMetricFamily("flocknode_peers", "Connected libp2p peers", value=len(s.p2p.peers))
        yield GaugeMetricFamily(
            "flocknode_members",
            "Registered, staked participants of the task (this node included)",
            value=s.p2p.members,
        )
        counts = P2PCounts.from_json(dict(s.p2p.events))
        for name, event, doc in (
            ("flocknode_gossip_received", "gossip_accepted", "Gossip messages accepted"),
            ("flocknode_gossip_published", "gossip_published", "Gossip messages this node sent"),
            ("flocknode_bytes_sent", "bytes_served", "Bytes of blobs and models served"),
            ("flocknode_bytes_received", "bytes_fetched", "Bytes of blobs and models fetched"),
        ):
            yield CounterMetricFamily(name, doc, value=counts.total(event))
        dropped = CounterMetricFamily(
            "flocknode_gossip_dropped", "Gossip messages dropped, by reason", labels=["reason"]
        )
        every = CounterMetricFamily(
            "flocknode_p2p_events",
            "Every p2p counter (drops, refusals, dials, fetches), by event and reason",
            labels=["event", "reason"],
        )
        for c in counts:
            if c.event == "gossip_dropped":
                dropped.add_metric([c.reason], c.value)
            every.add_metric([c.event, c.reason], c.value)
        yield dropped
        yield every

    def _rounds(self, s: NodeStatus) -> Iterator[Any]:
        yield ROUND.value(s.round.number)
        yield TOTAL_ROUNDS.value(s.round.total)
        yield PHASE.of([([p], 1 if p == s.round.phase else 0) for p in PHASES])
        mine = s.round.role or "none"
        yield ROLE.of([([r], 1 if r == mine else 0) for r in ROLES])
        yield CHAIN_BLOCK.value(s.chain.block)
        age = s.chain.age_seconds
        yield CHAIN_READ_AGE.value(float("nan") if age is None else age)
        yield HOLDS_MODEL.value(1 if s.model.held else 0)
        latest = s.model.latest_accuracy
        if latest is not None:
            yield MODEL_ACCURACY.value(latest[1])
            yield MODEL_ROUND.value(latest[0])
        yield ROUND_EVENTS.of([([name], n) for name, n in sorted(s.counters.items())])
        for name, fam in LABELLED_ROUND_COUNTERS.items():
            by_label = s.counters_by_label.get(name, {})
            yield fam.of([([label], n) for label, n in sorted(by_label.items())])
        yield CHAIN_ERRORS.value(s.counters.get("chain_errors", 0))

    def _registry(self, s: NodeStatus) -> Iterator[Any]:
        yield REGISTRY_IGNORED.of([([r], n) for r, n in sorted(s.registry_ignored.items())])
        yield STAKE_SAMPLE_ERRORS.value(s.stake.errors)

    def _stake(self, s: NodeStatus) -> Iterator[Any]:
        latest = s.stake.latest
        if latest is None:
            return  # nothing sampled yet: no made-up zero
        yield STAKE.value(latest.stake / TOKEN)
        yield REWARDS.value(latest.rewards / TOKEN)
        yield SLASHED.value(latest.slashed / TOKEN)
        yield PENDING_UNSTAKE.value(latest.pending_unstake / TOKEN)
        yield MIN_STAKE.value(s.stake.min_stake / TOKEN)

    def _timings(self, s: NodeStatus) -> Iterator[Any]:
        t = s.timings
        if t.train is not None:
            yield TRAIN_SECONDS.histograms([([], t.train)])
        if t.eval is not None:
            yield EVAL_SECONDS.histograms([([], t.eval)])
        yield TX_SECONDS.histograms([([a], h) for a, h in t.tx_latency.items()])
        yield TX_FAILURES.of([([f.action, f.reason], f.count) for f in t.tx_failures])
