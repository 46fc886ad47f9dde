"""/metrics: a Prometheus collector over the node's status snapshot.

No metric state lives here: every scrape takes one snapshot (``FlockNode.status``)
and turns its counters, gauges and duration summaries into metric families.
Names follow Prometheus conventions (``_total`` counters, ``_seconds``,
``_tokens``); tokens are whole tokens (18 decimals) as floats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from flocknode.http.readiness import readiness
from flocknode.p2p.metrics import P2PCounts

TOKEN = 10**18
PHASES = ("none", "seeding", "train", "commit", "reveal", "finalizable", "finalized", "voided")
ROLES = ("proposer", "voter", "none")

Snapshot = Callable[[], dict[str, Any]]


def _histogram(
    name: str, doc: str, labels: list[str], items: list[tuple[list[str], dict[str, Any]]]
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for label_values, s in items:
        buckets = [(_le(le), float(c)) for le, c in s["buckets"]]
        buckets.append(("+Inf", float(s["count"])))
        fam.add_metric(label_values, buckets, float(s["sum"]))
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

    def _identity(self, s: dict[str, Any]) -> Iterator[Any]:
        info = InfoMetricFamily("flocknode", "This node's identity")
        info.add_metric(
            [],
            {
                "wallet": str(s.get("wallet")),
                "peer_id": str(s.get("peer_id")),
                "task": str(s.get("task")),
            },
        )
        yield info
        yield GaugeMetricFamily(
            "flocknode_uptime_seconds", "Seconds since the node started", value=s.get("uptime", 0)
        )
        yield GaugeMetricFamily(
            "flocknode_ready", "1 if /readyz reports ready", value=0 if readiness(s) else 1
        )

    def _p2p(self, s: dict[str, Any]) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "flocknode_peers", "Connected libp2p peers", value=len(s.get("peers") or [])
        )
        yield GaugeMetricFamily(
            "flocknode_members",
            "Registered, staked participants of the task (this node included)",
            value=s.get("members", 0),
        )
        counts = P2PCounts.from_json(s.get("p2p") or {})
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

    def _rounds(self, s: dict[str, Any]) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "flocknode_round", "Current round on chain", value=s.get("round", 0)
        )
        yield GaugeMetricFamily(
            "flocknode_total_rounds", "Rounds the task runs", value=s.get("total_rounds") or 0
        )
        phase = GaugeMetricFamily(
            "flocknode_phase", "1 for the current round's phase", labels=["phase"]
        )
        current = s.get("phase", "none")
        for p in PHASES:
            phase.add_metric([p], 1 if p == current else 0)
        yield phase
        role = GaugeMetricFamily(
            "flocknode_role", "1 for this node's role in the current round", labels=["role"]
        )
        mine = s.get("role") or "none"
        for r in ROLES:
            role.add_metric([r], 1 if r == mine else 0)
        yield role
        chain = s.get("chain") or {}
        yield GaugeMetricFamily(
            "flocknode_chain_block", "Latest block read", value=s.get("block", 0)
        )
        age = chain.get("age_seconds")
        yield GaugeMetricFamily(
            "flocknode_chain_read_age_seconds",
            "Seconds since the last successful chain read (NaN before the first)",
            value=float("nan") if age is None else age,
        )
        yield GaugeMetricFamily(
            "flocknode_holds_global_model",
            "1 if the node holds the current global model",
            value=1 if s.get("holds_global_model") else 0,
        )
        acc = s.get("accuracy") or {}
        if acc:
            last = max(acc, key=int)
            yield GaugeMetricFamily(
                "flocknode_global_model_accuracy",
                "Test accuracy of the latest global model this node evaluated",
                value=float(acc[last]),
            )
            yield GaugeMetricFamily(
                "flocknode_global_model_round",
                "Round of the latest global model this node evaluated",
                value=int(last),
            )
        counters = s.get("counters") or {}
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

    def _registry(self, s: dict[str, Any]) -> Iterator[Any]:
        ignored = GaugeMetricFamily(
            "flocknode_registry_ignored",
            "Registrations (or single multiaddrs) in the latest registry read that the node "
            "ignores, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(((s.get("registry") or {}).get("ignored") or {}).items()):
            ignored.add_metric([str(reason)], n)
        yield ignored
        yield CounterMetricFamily(
            "flocknode_stake_sample_errors",
            "Stake samples that failed",
            value=(s.get("stake") or {}).get("errors", 0),
        )

    def _stake(self, s: dict[str, Any]) -> Iterator[Any]:
        latest = (s.get("stake") or {}).get("latest")
        if not latest:
            return
        for name, key, doc in (
            ("flocknode_stake_tokens", "stake", "Active stake"),
            ("flocknode_rewards_claimable_tokens", "rewards", "Rewards earned, not yet claimed"),
            ("flocknode_slashed_tokens", "slashed", "Tokens slashed so far"),
            ("flocknode_pending_unstake_tokens", "pending_unstake", "Stake being withdrawn"),
            ("flocknode_min_stake_tokens", "min_stake", "The task's minimum stake"),
        ):
            yield GaugeMetricFamily(name, doc, value=int(latest.get(key, 0)) / TOKEN)

    def _timings(self, s: dict[str, Any]) -> Iterator[Any]:
        t = s.get("timings") or {}
        if "train" in t:
            yield _histogram(
                "flocknode_train_seconds", "Local training time per round", [], [([], t["train"])]
            )
        if "eval" in t:
            yield _histogram(
                "flocknode_eval_seconds",
                "Voter evaluation time per round",
                [],
                [([], t["eval"])],
            )
        tx = t.get("tx") or {}
        yield _histogram(
            "flocknode_chain_tx_seconds",
            "Send-to-receipt time of mined transactions, by action",
            ["action"],
            [([a], v) for a, v in (tx.get("latency") or {}).items()],
        )
        fails = CounterMetricFamily(
            "flocknode_chain_tx_failures",
            "Transactions not mined: reverted, refused, out of gas money, RPC down",
            labels=["action", "reason"],
        )
        for f in tx.get("failures") or []:
            fails.add_metric([f["action"], f["reason"]], f["count"])
        yield fails
