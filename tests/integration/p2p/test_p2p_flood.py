"""Finding 13: a member flooding valid gossip makes a bounded amount of work and log lines.

The attacker is a member whose node was changed to flood: its own validator and
py-libp2p's publish throttle are switched off, and it signs and sends 1,000
valid announcements as fast as it can. The victim must accept (deliver and
relay) no more than its per-sender budget and log no more than the per-line
budget, however many arrive. Nothing here waits a fixed time: the flood ends
with a marker of another kind, and the test waits for the marker.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from flocknode.logs import LIBRARY_LOG_LIMITER
from flocknode.p2p.codec import encode_message
from flocknode.p2p.gossip import GOSSIP_BURST, GOSSIP_RATE
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.messages import ModelAvailable, UpdateAnnounce
from flocknode.p2p.metrics import GOSSIP_ACCEPTED, GOSSIP_DROPPED
from flocknode.p2p.ratelimit import RateLimiter
from tests.integration.p2p.p2p_helpers import (
    TOPIC,
    Node,
    drain,
    running_nodes,
    wait_connected,
    wait_mesh,
    wait_until,
)

pytestmark = pytest.mark.integration

FLOOD = 1000
LINE_BURST = 10  # the per-kind budget of peer-caused lines (flocknode.logs)


@contextmanager
def log_records(*names: str) -> Iterator[list[logging.LogRecord]]:
    """Every record that reaches the handlers of the named loggers (after their filters)."""
    seen: list[logging.LogRecord] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Count(logging.INFO)
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).addHandler(handler)
        # whatever level an earlier test's logging set-up left: the node's own is INFO
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        yield seen
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(levels[name])


def turn_into_flooder(node: Node) -> None:
    node.p2p.pubsub.set_topic_validator(TOPIC, lambda *_: True, False)
    node.p2p.router.spam_protection_enabled = False


async def flood(victim: Node, attacker: Node) -> list[object]:
    """FLOOD announcements, then a marker of another kind; what the victim delivered."""
    for i in range(FLOOD):
        data = encode_message(UpdateAnnounce(1, i.to_bytes(32, "big"), 1000))
        await attacker.p2p.pubsub.publish(TOPIC, data)
        await trio.sleep(0.001)  # ~1,000 a second: faster overflows its own send queue
    marker = ModelAvailable(1, b"\x99" * 32, 1000)
    got: list[object] = []

    def marker_arrived() -> bool:
        got.extend(r.message for r in drain(victim) if r.origin == attacker.peer_id)
        return marker in got

    for _ in range(5):  # the marker has its own bucket; resent if lost in the flood
        await attacker.p2p.pubsub.publish(TOPIC, encode_message(marker))
        try:
            await wait_until(marker_arrived, timeout=10)
            break
        except trio.TooSlowError:
            continue
    assert marker in got
    return got


async def test_finding13_member_flood_is_bounded_in_work_and_log_lines() -> None:
    membership = StaticMembership(round_number=1)
    async with running_nodes(2, membership) as (victim, attacker):
        await wait_connected([victim, attacker])
        await wait_mesh([victim, attacker])
        turn_into_flooder(attacker)
        with log_records("libp2p", "flocknode") as records:
            started = trio.current_time()
            got = await flood(victim, attacker)
            elapsed = trio.current_time() - started

        metrics = victim.p2p.metrics
        announces = [m for m in got if isinstance(m, UpdateAnnounce)]
        budget = GOSSIP_BURST + GOSSIP_RATE * elapsed + 1
        assert len(announces) <= budget, (len(announces), elapsed)
        assert metrics.get(GOSSIP_ACCEPTED) <= budget + 5  # + the markers
        assert metrics.get(GOSSIP_DROPPED, "rate_limited") >= FLOOD / 2
        # log lines: at most the per-line budget from any one place in the code
        per_line = Counter((r.name, r.lineno) for r in records)
        assert max(per_line.values(), default=0) <= LINE_BURST, per_line.most_common(3)


async def test_finding13_libp2p_lines_of_a_flood_pass_the_line_budget() -> None:
    """Without the gossip budget, py-libp2p warns once per message over its own limit."""
    membership = StaticMembership(round_number=1)
    async with running_nodes(2, membership) as (victim, attacker):
        await wait_connected([victim, attacker])
        await wait_mesh([victim, attacker])
        turn_into_flooder(attacker)
        victim.gossip.limiter = RateLimiter(rate=1e9, burst=1e9)  # every message accepted
        held_before = sum(LIBRARY_LOG_LIMITER.suppressed.values())
        with log_records("libp2p") as records:
            await flood(victim, attacker)
        assert victim.p2p.metrics.get(GOSSIP_ACCEPTED) >= FLOOD / 2  # the flood got through
        per_line = Counter((r.name, r.lineno) for r in records)
        assert max(per_line.values(), default=0) <= LINE_BURST, per_line.most_common(3)
        assert sum(LIBRARY_LOG_LIMITER.suppressed.values()) - held_before >= FLOOD / 4
