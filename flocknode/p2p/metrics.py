"""Counters for what the p2p layer dropped, refused and moved.

One ``P2PMetrics`` object is shared by the host, gossip and stream services of a
node. Every counter is an (event, reason) pair, for example
``("gossip_dropped", "stale_round")``; ``snapshot()`` flattens them to
``"event{reason}"`` keys so a later Prometheus exporter can map them to one
metric family per event with a ``reason`` label. Reasons are a small fixed set:
never a peer id, so the table stays bounded however many peers come and go.
"""

from __future__ import annotations

from collections import Counter

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

    def snapshot(self) -> dict[str, int]:
        return {(f"{e}{{{r}}}" if r else e): v for (e, r), v in sorted(self._counts.items()) if v}
