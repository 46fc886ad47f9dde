"""Counters for what the p2p layer dropped, refused and moved.

One ``P2PMetrics`` object is shared by the host, gossip and stream services of a
node. Every counter is an (event, reason) pair, for example
``("gossip_dropped", "stale_round")``; ``counts()`` takes a frozen ``P2PCounts``
copy that consumers read by event and reason (the /metrics exporter turns each
event into a metric family with a ``reason`` label). Reasons are a small fixed
set: never a peer id, so the table stays bounded however many peers come and go.

In JSON (status.json) the counters are one object with ``"event{reason}"`` keys
(``"event"`` for the empty reason): ``P2PCounts.to_json`` and ``from_json``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# Events (the metric families). Reasons are short snake_case strings.
GOSSIP_DROPPED = "gossip_dropped"  # a gossip message the topic validator rejected
GOSSIP_ACCEPTED = "gossip_accepted"  # a gossip message that passed the validator
PUBSUB_STREAM_REJECTED = "pubsub_stream_rejected"  # a raw pubsub stream we reset
PUBSUB_TASK_ERROR = "pubsub_task_error"  # a pubsub task that raised on peer input
CONN_REFUSED = "conn_refused"  # a connection closed because the peer is not a member
DIAL = "dial"  # outcome of a discovery dial: ok / failed
DIAL_REFUSED = "dial_refused"  # a dial py-libp2p started itself, refused: not_member / backoff
BUILTIN_REFUSED = "builtin_refused"  # identify / identify_push / ping from a non-member, reset
# a stream py-libp2p opened itself to a non-member, refused: identify / identify_push /
# ping / pubsub / other (by protocol)
OUTBOUND_REFUSED = "outbound_refused"
STREAM_REFUSED = "stream_refused"  # a blob/model request this node refused
STREAM_SERVED = "stream_served"  # a blob/model request this node served: ok / aborted
FETCH_ATTEMPT_FAILED = "fetch_attempt_failed"  # one holder failed; the fetch moved on
FETCH = "fetch"  # outcome of a whole fetch: ok / failed
BYTES_SERVED = "bytes_served"
BYTES_FETCHED = "bytes_fetched"


@dataclass(frozen=True)
class P2PCount:
    """One counter: how often ``event`` happened for ``reason`` ("" if it has none)."""

    event: str
    reason: str
    value: int


@dataclass(frozen=True)
class P2PCounts:
    """A frozen copy of counters: ``P2PMetrics.counts()`` holds the non-zero ones
    sorted by (event, reason); ``from_json`` keeps the order it reads."""

    entries: tuple[P2PCount, ...] = ()

    def __iter__(self) -> Iterator[P2PCount]:
        return iter(self.entries)

    def get(self, event: str, reason: str = "") -> int:
        return sum(c.value for c in self.entries if c.event == event and c.reason == reason)

    def total(self, event: str) -> int:
        """The sum over every reason of ``event``."""
        return sum(c.value for c in self.entries if c.event == event)

    def reasons(self, event: str) -> dict[str, int]:
        return {c.reason: c.value for c in self.entries if c.event == event}

    def to_json(self) -> dict[str, int]:
        """``{"gossip_dropped{stale_round}": 3, "bytes_served": 100}``."""
        return {(f"{c.event}{{{c.reason}}}" if c.reason else c.event): c.value for c in self}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> P2PCounts:
        """The inverse of ``to_json``; keys that name no counter and values that are
        not integers are skipped (the file may come from another version)."""
        found: dict[tuple[str, str], int] = {}
        for key, value in data.items():
            event, brace, reason = str(key).partition("{")
            if brace:
                if not reason.endswith("}") or "{" in reason[:-1] or "}" in reason[:-1]:
                    continue
                reason = reason[:-1]
            if not _is_event(event) or type(value) is not int:
                continue
            found[(event, reason)] = value
        return cls(tuple(P2PCount(e, r, v) for (e, r), v in found.items()))


def _is_event(name: str) -> bool:
    return bool(name) and all(ch == "_" or "a" <= ch <= "z" for ch in name)


def _counts(counts: Mapping[tuple[str, str], int]) -> P2PCounts:
    return P2PCounts(tuple(P2PCount(e, r, v) for (e, r), v in sorted(counts.items()) if v))


class P2PMetrics:
    """A small counter registry; cheap enough to call on every message."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def inc(self, event: str, reason: str = "", n: int = 1) -> None:
        self._counts[(event, reason)] += n

    def get(self, event: str, reason: str = "") -> int:
        return self._counts[(event, reason)]

    def total(self, event: str) -> int:
        """The sum over every reason of ``event``."""
        return sum(v for (e, _), v in self._counts.items() if e == event)

    def reasons(self, event: str) -> dict[str, int]:
        return {r: v for (e, r), v in self._counts.items() if e == event}

    def counts(self) -> P2PCounts:
        """A frozen copy of every non-zero counter."""
        return _counts(self._counts)

    def snapshot(self) -> dict[str, int]:
        """The counters as JSON (``counts().to_json()``)."""
        return self.counts().to_json()
