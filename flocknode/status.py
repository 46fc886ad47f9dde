"""NodeStatus: one frozen snapshot of a running node, read by attribute.

``FlockNode.status()`` builds one; the HTTP page, /status.json, /metrics,
/readyz, ``flocknode status``, ``doctor`` and the cluster monitor read it.
Other processes read it from the status file in the data dir
(``DataDir.status_file``), so the snapshot has one JSON form, written by
``to_json`` and read back by ``from_json``:

    wallet, peer_id, task, uptime, behaviour, http      identity
    block, chain {age_seconds, error}, last_error       the chain as last read
    round, total_rounds, phase, role, seat, complete    the current round
    global_model_hash, holds_global_model, accuracy     the global model
    peers, members, p2p                                 libp2p
    roles, counters, counters_by_label                  history and counters
    registry {ignored}, timings
    stake {latest, history, errors}                     stake over time

``from_json`` fills what a document lacks with the empty value, so a reader
of an older or partial file gets a NodeStatus, never a KeyError.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NO_PHASE = "none"


def _map(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram: ``buckets`` are (upper bound, count at or below it)."""

    count: int = 0
    sum: float = 0.0
    buckets: tuple[tuple[float, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "sum": self.sum, "buckets": [list(b) for b in self.buckets]}

    @classmethod
    def from_json(cls, d: Any) -> Histogram:
        d = _map(d)
        return cls(
            count=int(d.get("count", 0)),
            sum=float(d.get("sum", 0.0)),
            buckets=tuple((float(le), int(n)) for le, n in _list(d.get("buckets"))),
        )


@dataclass(frozen=True)
class TxFailure:
    action: str
    reason: str
    count: int


@dataclass(frozen=True)
class Timings:
    """Work and chain-transaction durations (``RoundMetrics.timings()``)."""

    train: Histogram | None = None
    eval: Histogram | None = None
    tx_latency: Mapping[str, Histogram] = field(default_factory=dict)  # by action
    tx_failures: tuple[TxFailure, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.train is not None:
            out["train"] = self.train.to_json()
        if self.eval is not None:
            out["eval"] = self.eval.to_json()
        out["tx"] = {
            "latency": {a: h.to_json() for a, h in self.tx_latency.items()},
            "failures": [
                {"action": f.action, "reason": f.reason, "count": f.count} for f in self.tx_failures
            ],
        }
        return out

    @classmethod
    def from_json(cls, d: Any) -> Timings:
        d = _map(d)
        tx = _map(d.get("tx"))
        return cls(
            train=Histogram.from_json(d["train"]) if "train" in d else None,
            eval=Histogram.from_json(d["eval"]) if "eval" in d else None,
            tx_latency={str(a): Histogram.from_json(h) for a, h in _map(tx.get("latency")).items()},
            tx_failures=tuple(
                TxFailure(str(f["action"]), str(f["reason"]), int(f["count"]))
                for f in _list(tx.get("failures"))
            ),
        )


@dataclass(frozen=True)
class ChainStatus:
    """The chain as the node last read it."""

    block: int = 0
    age_seconds: float | None = None  # since the last successful read; None before the first
    error: str = ""  # the last read's error, "" when it succeeded


@dataclass(frozen=True)
class RoundStatus:
    """The current round on chain and this node's part in it."""

    number: int = 0
    total: int = 0
    phase: str = NO_PHASE
    role: str | None = None  # "proposer", "voter", or None when not elected
    seat: int | None = None
    complete: bool = False  # the task ran its last round


@dataclass(frozen=True)
class ModelStatus:
    """The task's global model and what this node measured of it."""

    global_hash: str = ""  # 0x-prefixed hex
    held: bool = False  # the node holds the current global model
    accuracy: Mapping[int, float] = field(default_factory=dict)  # round -> test accuracy

    @property
    def latest_accuracy(self) -> tuple[int, float] | None:
        """(round, accuracy) of the newest evaluated global model."""
        if not self.accuracy:
            return None
        r = max(self.accuracy)
        return r, self.accuracy[r]


@dataclass(frozen=True)
class P2PStatus:
    peers: tuple[str, ...] = ()  # connected peer ids
    members: int = 0  # registered, staked participants (this node included)
    events: Mapping[str, int] = field(default_factory=dict)  # P2PMetrics.snapshot()


@dataclass(frozen=True)
class StakeRecord:
    """One sample of the wallet's participant record (token base units)."""

    at: float  # unix time
    round: int
    stake: int
    rewards: int  # claimable
    slashed: int  # cumulative
    pending_unstake: int

    @property
    def values(self) -> tuple[int, int, int, int]:
        """What a sample measures, without when: equal values are not kept twice."""
        return (self.stake, self.rewards, self.slashed, self.pending_unstake)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "round": self.round,
            "stake": self.stake,
            "rewards": self.rewards,
            "slashed": self.slashed,
            "pending_unstake": self.pending_unstake,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StakeRecord:
        return cls(
            at=float(d.get("at", 0.0)),
            round=int(d.get("round", 0)),
            stake=int(d.get("stake", 0)),
            rewards=int(d.get("rewards", 0)),
            slashed=int(d.get("slashed", 0)),
            pending_unstake=int(d.get("pending_unstake", 0)),
        )


@dataclass(frozen=True)
class StakeStatus:
    latest: StakeRecord | None = None
    min_stake: int = 0  # the task's minimum, read with the latest sample
    history: tuple[StakeRecord, ...] = ()
    errors: int = 0  # samples that failed

    def to_json(self) -> dict[str, Any]:
        latest = None
        if self.latest is not None:
            latest = {**self.latest.to_json(), "min_stake": self.min_stake}
        return {
            "latest": latest,
            "history": [s.to_json() for s in self.history],
            "errors": self.errors,
        }

    @classmethod
    def from_json(cls, d: Any) -> StakeStatus:
        d = _map(d)
        latest = d.get("latest")
        return cls(
            latest=StakeRecord.from_json(latest) if isinstance(latest, dict) else None,
            min_stake=int(_map(latest).get("min_stake", 0)),
            history=tuple(StakeRecord.from_json(s) for s in _list(d.get("history"))),
            errors=int(d.get("errors", 0)),
        )


@dataclass(frozen=True)
class RoleRecord:
    """A round this node was elected in."""

    round: int
    role: str
    seat: int
    at: float  # unix time the node saw the election


@dataclass(frozen=True)
class NodeStatus:
    wallet: str = ""
    peer_id: str = ""
    task: str = ""
    uptime: float = 0.0
    behaviour: str = "honest"
    http: tuple[str, ...] = ()  # URLs the HTTP endpoint is bound to
    chain: ChainStatus = field(default_factory=ChainStatus)
    round: RoundStatus = field(default_factory=RoundStatus)
    model: ModelStatus = field(default_factory=ModelStatus)
    p2p: P2PStatus = field(default_factory=P2PStatus)
    stake: StakeStatus = field(default_factory=StakeStatus)
    roles: tuple[RoleRecord, ...] = ()  # oldest first
    counters: Mapping[str, int] = field(default_factory=dict)  # plain RoundMetrics counters
    # labelled RoundMetrics counters: name -> label value -> count
    counters_by_label: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    registry_ignored: Mapping[str, int] = field(default_factory=dict)  # by reason
    timings: Timings = field(default_factory=Timings)

    def to_json(self) -> dict[str, Any]:
        return {
            "wallet": self.wallet,
            "peer_id": self.peer_id,
            "task": self.task,
            "uptime": self.uptime,
            "round": self.round.number,
            "total_rounds": self.round.total,
            "phase": self.round.phase,
            "role": self.round.role,
            "seat": self.round.seat,
            "block": self.chain.block,
            "global_model_hash": self.model.global_hash,
            "holds_global_model": self.model.held,
            "complete": self.round.complete,
            "peers": list(self.p2p.peers),
            "members": self.p2p.members,
            "roles": [
                {"round": r.round, "role": r.role, "seat": r.seat, "at": r.at} for r in self.roles
            ],
            "accuracy": {str(k): v for k, v in sorted(self.model.accuracy.items())},
            "counters": dict(self.counters),
            "counters_by_label": {k: dict(v) for k, v in self.counters_by_label.items()},
            "p2p": dict(self.p2p.events),
            "last_error": self.chain.error,
            "behaviour": self.behaviour,
            "chain": {"age_seconds": self.chain.age_seconds, "error": self.chain.error},
            "stake": self.stake.to_json(),
            "registry": {"ignored": dict(self.registry_ignored)},
            "timings": self.timings.to_json(),
            "http": list(self.http),
        }

    @classmethod
    def from_json(cls, doc: Any) -> NodeStatus:
        """A snapshot from its JSON form; missing or mistyped parts are left empty.

        Raises ValueError only when ``doc`` is not a JSON object at all.
        """
        if not isinstance(doc, dict):
            raise ValueError("a node status is a JSON object")
        try:
            return cls._from_json(doc)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"not a node status: {e!r}") from None

    @classmethod
    def _from_json(cls, d: dict[str, Any]) -> NodeStatus:
        chain = _map(d.get("chain"))
        age = chain.get("age_seconds")
        seat = d.get("seat")
        role = d.get("role")
        return cls(
            wallet=str(d.get("wallet") or ""),
            peer_id=str(d.get("peer_id") or ""),
            task=str(d.get("task") or ""),
            uptime=float(d.get("uptime") or 0.0),
            behaviour=str(d.get("behaviour") or "honest"),
            http=tuple(str(u) for u in _list(d.get("http"))),
            chain=ChainStatus(
                block=int(d.get("block") or 0),
                age_seconds=None if age is None else float(age),
                error=str(chain.get("error") or d.get("last_error") or ""),
            ),
            round=RoundStatus(
                number=int(d.get("round") or 0),
                total=int(d.get("total_rounds") or 0),
                phase=str(d.get("phase") or NO_PHASE),
                role=None if role is None else str(role),
                seat=None if seat is None else int(seat),
                complete=bool(d.get("complete")),
            ),
            model=ModelStatus(
                global_hash=str(d.get("global_model_hash") or ""),
                held=bool(d.get("holds_global_model")),
                accuracy={int(k): float(v) for k, v in _map(d.get("accuracy")).items()},
            ),
            p2p=P2PStatus(
                peers=tuple(str(p) for p in _list(d.get("peers"))),
                members=int(d.get("members") or 0),
                events={str(k): int(v) for k, v in _map(d.get("p2p")).items()},
            ),
            stake=StakeStatus.from_json(d.get("stake")),
            roles=tuple(
                RoleRecord(int(r["round"]), str(r["role"]), int(r["seat"]), float(r["at"]))
                for r in _list(d.get("roles"))
            ),
            counters={str(k): int(v) for k, v in _map(d.get("counters")).items()},
            counters_by_label={
                str(k): {str(label): int(n) for label, n in _map(v).items()}
                for k, v in _map(d.get("counters_by_label")).items()
            },
            registry_ignored={
                str(k): int(v) for k, v in _map(_map(d.get("registry")).get("ignored")).items()
            },
            timings=Timings.from_json(d.get("timings")),
        )


def read_status_file(path: Path, max_age: float | None = None) -> NodeStatus | None:
    """The snapshot a node last wrote to ``path``; None when there is none, it is
    unreadable, or it was written more than ``max_age`` seconds ago (the node
    rewrites it every second while it runs)."""
    try:
        if max_age is not None and time.time() - path.stat().st_mtime > max_age:
            return None
        return NodeStatus.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
