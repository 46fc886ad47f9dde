"""/metrics: a Prometheus collector over the node's status snapshot.

No metric state lives here: every scrape takes one ``NodeStatus``
(``FlockNode.status``) and turns its counters, gauges and histograms into
metric families, each with fixed label names.
Names follow Prometheus conventions (``_total`` counters, ``_seconds``,
``_tokens``); tokens are whole tokens (18 decimals) as floats.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from flocknode.http.readiness import not_ready_reasons
from flocknode.status import Histogram, NodeStatus

TOKEN = 10**18
PHASES = ("none", "seeding", "train", "commit", "reveal", "finalizable", "finalized", "voided")
ROLES = ("proposer", "voter", "none")
_P2P_KEY = re.compile(r"^(?P<event>[a-z_]+)(?:\{(?P<reason>[^}]*)\})?$")

Snapshot = Callable[[], NodeStatus]


def parse_p2p(snapshot: dict[str, int]) -> list[tuple[str, str, int]]:
    """``{"gossip_dropped{stale_round}": 3}`` -> ``[("gossip_dropped", "stale_round", 3)]``."""
    out = []
    for key, value in snapshot.items():
        m = _P2P_KEY.match(key)
        if m:
            out.append((m["event"], m["reason"] or "", int(value)))
    return out


def _histogram(
    name: str, doc: str, labels: list[str], items: list[tuple[list[str], Histogram]]
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for label_values, h in items:
        buckets = [(_le(le), float(c)) for le, c in h.buckets]
        buckets.append(("+Inf", float(h.count)))
        fam.add_metric(label_values, buckets, h.sum)
    return fam


def _le(v: float) -> str:
    return repr(float(v))


class NodeCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self._snapshot()
        yield from self._identity(s)
        yield from self._p2p(s)
        yield from self._rounds(s)
        yield from self._stake(s)
        yield from self._registry(s)
        yield from self._timings(s)

    def _identity(self, s: NodeStatus) -> Iterator[Any]:
        info = InfoMetricFamily("flocknode", "This node's identity")
        info.add_metric([], {"wallet": s.wallet, "peer_id": s.peer_id, "task": s.task})
        yield info
        yield GaugeMetricFamily(
            "flocknode_uptime_seconds", "Seconds since the node started", value=s.uptime
        )
        yield GaugeMetricFamily(
            "flocknode_ready", "1 if /readyz reports ready", value=0 if not_ready_reasons(s) else 1
        )

    def _p2p(self, s: NodeStatus) -> Iterator[Any]:
        yield GaugeMetricFamily("flocknode_peers", "Connected libp2p peers", value=len(s.p2p.peers))
        yield GaugeMetricFamily(
            "flocknode_members",
            "Registered, staked participants of the task (this node included)",
            value=s.p2p.members,
        )
        events = parse_p2p(dict(s.p2p.events))
        totals: dict[str, int] = {}
        for event, _, n in events:
            totals[event] = totals.get(event, 0) + n
        for name, event, doc in (
            ("flocknode_gossip_received", "gossip_accepted", "Gossip messages accepted"),
            ("flocknode_gossip_published", "gossip_published", "Gossip messages this node sent"),
            ("flocknode_bytes_sent", "bytes_served", "Bytes of blobs and models served"),
            ("flocknode_bytes_received", "bytes_fetched", "Bytes of blobs and models fetched"),
        ):
            yield CounterMetricFamily(name, doc, value=totals.get(event, 0))
        dropped = CounterMetricFamily(
            "flocknode_gossip_dropped", "Gossip messages dropped, by reason", labels=["reason"]
        )
        every = CounterMetricFamily(
            "flocknode_p2p_events",
            "Every p2p counter (drops, refusals, dials, fetches), by event and reason",
            labels=["event", "reason"],
        )
        for event, reason, n in events:
            if event == "gossip_dropped":
                dropped.add_metric([reason], n)
            every.add_metric([event, reason], n)
        yield dropped
        yield every

    def _rounds(self, s: NodeStatus) -> Iterator[Any]:
        yield GaugeMetricFamily("flocknode_round", "Current round on chain", value=s.round.number)
        yield GaugeMetricFamily(
            "flocknode_total_rounds", "Rounds the task runs", value=s.round.total
        )
        phase = GaugeMetricFamily(
            "flocknode_phase", "1 for the current round's phase", labels=["phase"]
        )
        for p in PHASES:
            phase.add_metric([p], 1 if p == s.round.phase else 0)
        yield phase
        role = GaugeMetricFamily(
            "flocknode_role", "1 for this node's role in the current round", labels=["role"]
        )
        mine = s.round.role or "none"
        for r in ROLES:
            role.add_metric([r], 1 if r == mine else 0)
        yield role
        yield GaugeMetricFamily("flocknode_chain_block", "Latest block read", value=s.chain.block)
        age = s.chain.age_seconds
        yield GaugeMetricFamily(
            "flocknode_chain_read_age_seconds",
            "Seconds since the last successful chain read (NaN before the first)",
            value=float("nan") if age is None else age,
        )
        yield GaugeMetricFamily(
            "flocknode_holds_global_model",
            "1 if the node holds the current global model",
            value=1 if s.model.held else 0,
        )
        latest = s.model.latest_accuracy
        if latest is not None:
            yield GaugeMetricFamily(
                "flocknode_global_model_accuracy",
                "Test accuracy of the latest global model this node evaluated",
                value=latest[1],
            )
            yield GaugeMetricFamily(
                "flocknode_global_model_round",
                "Round of the latest global model this node evaluated",
                value=latest[0],
            )
        counters = s.counters
        ev = CounterMetricFamily(
            "flocknode_round_events", "Round engine events by name", labels=["event"]
        )
        for name, n in sorted(counters.items()):
            ev.add_metric([name], n)
        yield ev
        yield CounterMetricFamily(
            "flocknode_chain_errors",
            "Chain reads that failed (the engine retried)",
            value=counters.get("chain_errors", 0),
        )

    def _registry(self, s: NodeStatus) -> Iterator[Any]:
        ignored = GaugeMetricFamily(
            "flocknode_registry_ignored",
            "Registrations (or single multiaddrs) in the latest registry read that the node "
            "ignores, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(s.registry_ignored.items()):
            ignored.add_metric([reason], n)
        yield ignored
        yield CounterMetricFamily(
            "flocknode_stake_sample_errors",
            "Stake samples that failed",
            value=s.stake.errors,
        )

    def _stake(self, s: NodeStatus) -> Iterator[Any]:
        latest = s.stake.latest
        if latest is None:
            return
        for name, units, doc in (
            ("flocknode_stake_tokens", latest.stake, "Active stake"),
            (
                "flocknode_rewards_claimable_tokens",
                latest.rewards,
                "Rewards earned, not yet claimed",
            ),
            ("flocknode_slashed_tokens", latest.slashed, "Tokens slashed so far"),
            ("flocknode_pending_unstake_tokens", latest.pending_unstake, "Stake being withdrawn"),
            ("flocknode_min_stake_tokens", s.stake.min_stake, "The task's minimum stake"),
        ):
            yield GaugeMetricFamily(name, doc, value=units / TOKEN)

    def _timings(self, s: NodeStatus) -> Iterator[Any]:
        t = s.timings
        if t.train is not None:
            yield _histogram(
                "flocknode_train_seconds", "Local training time per round", [], [([], t.train)]
            )
        if t.eval is not None:
            yield _histogram(
                "flocknode_eval_seconds", "Voter evaluation time per round", [], [([], t.eval)]
            )
        yield _histogram(
            "flocknode_chain_tx_seconds",
            "Send-to-receipt time of mined transactions, by action",
            ["action"],
            [([a], h) for a, h in t.tx_latency.items()],
        )
        fails = CounterMetricFamily(
            "flocknode_chain_tx_failures",
            "Transactions not mined: reverted, refused, out of gas money, RPC down",
            labels=["action", "reason"],
        )
        for f in t.tx_failures:
            fails.add_metric([f.action, f.reason], f.count)
        yield fails
