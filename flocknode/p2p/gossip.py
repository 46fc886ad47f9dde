"""The task's gossip topic: publish control messages, receive validated ones.

One topic per task, ``/flock/<chainId>/<task address>/1``. The topic validator
(``check_gossip``) runs on every message before it is delivered or relayed; it
never raises (a raising validator ends ``trio.run`` in py-libp2p 0.8.1) and
counts every drop by reason in ``P2PMetrics``. Accepted messages, the node's
own included, arrive on ``messages`` as ``Received(origin, message)``.

Each member may have at most ``GOSSIP_BURST`` messages of one kind accepted at
once and ``GOSSIP_RATE`` a second after that (a token bucket per origin and
kind, checked in the validator before the message is delivered or relayed);
the rest are dropped as ``rate_limited`` (docs/protocol.md "Floods and log
limiting"). Honest nodes repeat an announcement every 2 s at most.

Keep gossip small and rare: messages of 1 MiB and more vanish
silently, and py-libp2p throttles every publisher, this node too, to 10
messages per topic per second.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from flocknode.logs import PeerLog
from flocknode.p2p import compat
from flocknode.p2p.codec import DecodeError, decode_message, encode_message
from flocknode.p2p.host import P2PHost
from flocknode.p2p.messages import Message
from flocknode.p2p.metrics import GOSSIP_ACCEPTED, GOSSIP_DROPPED
from flocknode.p2p.ratelimit import RateLimiter
from flocknode.p2p.validation import check_gossip, check_message

if TYPE_CHECKING:  # trio-typing's stubs shadow trio's own TaskStatus for mypy
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines a peer can cause: rate-limited

DELIVERY_QUEUE = 256
GOSSIP_RATE = 1.0  # messages per second one origin may have accepted, per kind
GOSSIP_BURST = 10  # and at once


def task_topic(chain_id: int, task_address: str) -> str:
    """The gossip topic of one task; the address is lower-cased hex with 0x."""
    addr = task_address.lower()
    if not addr.startswith("0x") or len(addr) != 42:
        raise ValueError(f"not a task address: {task_address!r}")
    int(addr, 16)
    return f"/flock/{int(chain_id)}/{addr}/1"


@dataclass(frozen=True)
class Received:
    """A validated gossip message and the member that signed it."""

    origin: ID
    message: Message


class TaskGossip:
    """Subscribes to one task topic on a running ``P2PHost``."""

    def __init__(
        self,
        p2p: P2PHost,
        topic: str,
        queue_size: int = DELIVERY_QUEUE,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._p2p = p2p
        self.topic = topic
        self.limiter = limiter or RateLimiter(GOSSIP_RATE, GOSSIP_BURST)
        self._send, self.messages = trio.open_memory_channel[Received](queue_size)
        self.started = trio.Event()
        self._stop = trio.Event()

    def stop(self) -> None:
        self._stop.set()

    def validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """The topic validator. Never raises; counts every drop."""
        metrics = self._p2p.metrics
        try:
            if not self._p2p.membership.is_member(forwarder):
                metrics.inc(GOSSIP_DROPPED, "forwarder_not_member")
                return False
            origin = ID(msg.from_id)
            verdict = check_gossip(msg.data, origin, self._p2p.membership)
            if not verdict.accepted:
                metrics.inc(GOSSIP_DROPPED, verdict.reason)
                return False
            kind = type(verdict.message).__name__
            if origin != self._p2p.peer_id and not self.limiter.allow((origin, kind)):
                metrics.inc(GOSSIP_DROPPED, "rate_limited")
                peer_log.info("rate_limited", "gossip rate limited origin=%s kind=%s", origin, kind)
                return False
            metrics.inc(GOSSIP_ACCEPTED)
            return True
        except Exception as e:
            metrics.inc(GOSSIP_DROPPED, "validator_error")
            log.warning("gossip validator error=%r", e)
            return False

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._p2p.started.wait()
        pubsub = self._p2p.pubsub
        pubsub.set_topic_validator(self.topic, self.validate, False)
        compat.restrict_topics(pubsub, {self.topic})  # ignore peers' other subscriptions
        subscription = await pubsub.subscribe(self.topic)
        self.started.set()
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, subscription)
                await _first_of(self._stop, self._p2p.stopping)
                nursery.cancel_scope.cancel()
        finally:
            self._send.close()
            if not self._p2p.stopping.is_set():
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(2),
                    contextlib.suppress(Exception),
                ):
                    await pubsub.unsubscribe(self.topic)

    async def _deliver(self, subscription: AsyncIterable[rpc_pb2.Message]) -> None:
        async for raw in subscription:
            try:
                received = Received(ID(raw.from_id), decode_message(raw.data))
            except DecodeError:  # cannot happen after the validator; never fatal
                continue
            try:
                self._send.send_nowait(received)
            except trio.WouldBlock:
                self._p2p.metrics.inc(GOSSIP_DROPPED, "queue_full")
            except trio.ClosedResourceError:
                return

    async def publish(self, message: Message) -> None:
        """Sign and send ``message``. Raises ValueError if the validator would drop it."""
        if not self.started.is_set():
            raise RuntimeError("gossip is not running")
        if not self._p2p.membership.is_member(self._p2p.peer_id):
            raise ValueError("this node is not a member of the task: peers would drop it")
        reason = check_message(message, self._p2p.membership.current_round())
        if reason:
            raise ValueError(f"message not publishable now: {reason}")
        await self._p2p.pubsub.publish(self.topic, encode_message(message))


async def _first_of(*events: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        for event in events:

            async def wait(e: trio.Event = event) -> None:
                await e.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)
