"""Keep bytes from peers from ending the process through py-libp2p's pubsub.

py-libp2p 0.8.1 has two holes:
- ``Pubsub.stream_handler`` catches only StreamError, ParseError and
  IncompleteReadError; a frame that is not a valid protobuf RPC raises
  ``google.protobuf.message.DecodeError``, which escapes through the swarm and
  ends ``host.run``;
- ``Pubsub.push_msg`` runs as a pubsub task per received message; a message whose
  ``key`` field is not a valid public key makes ``signature_validator`` raise,
  which stops the pubsub service.

``install_pubsub_guard`` replaces the stream handler registered for every
protocol id of the router (``Pubsub.__init__`` has already registered the
original) with its own read loop over the library's, and wraps ``push_msg`` so
nothing a peer sends escapes; both hooks go through ``flocknode.p2p.compat``,
which refuses to build the host if either is missing. Cancellation is never
swallowed.

A bad frame costs that frame, not the member's gossip (docs/protocol.md
"Malformed pubsub frames"). An inbound pubsub stream only carries what the peer
tells us; the peer's subscriptions and our outbound stream are separate state:
- a frame that is not a protobuf RPC (its length prefix was fine) is skipped and
  reading goes on (after ``MAX_BAD_FRAMES`` on one stream, the stream is reset);
- a stream whose framing is broken (a prefix that is no varint, a frame over the
  size limit) is reset, and one that ends in the middle of a frame is counted;
  the peer's subscriptions are kept (the library forgets them when it resets
  for an oversized frame; they are put back) and our outbound stream to it
  stays;
- the peer notices the reset on its next write and opens a new stream, having
  forgotten our subscriptions: every new inbound stream from a peer we already
  send to gets our subscriptions again.
Every case is counted in ``pubsub_stream_rejected{reason}`` and logged
rate-limited (PeerLog).
"""

from __future__ import annotations

import logging
from typing import Any

from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from flocknode.logs import PeerLog
from flocknode.p2p import compat
from flocknode.p2p.membership import Membership
from flocknode.p2p.metrics import PUBSUB_STREAM_REJECTED, PUBSUB_TASK_ERROR, P2PMetrics
from flocknode.p2p.stream_io import reset_quietly

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines a peer can cause: rate-limited

MAX_BAD_FRAMES = 64  # malformed frames skipped on one stream before it is reset


class _FrameWatch:
    """A transparent stream proxy that follows the varint framing of what is read.

    It knows whether the stream ended in the middle of a frame, and whether the
    library reset the stream (it does for an oversized frame, and then forgets
    the peer's subscriptions: they are noted here first, to be put back).
    """

    def __init__(self, stream: INetStream, pubsub: Pubsub, peer_id: ID) -> None:
        self._stream, self._pubsub, self._peer = stream, pubsub, peer_id
        self.was_reset = False
        self.topics_at_reset: list[str] = []
        self._body = 0  # bytes of the current frame's body still to come
        self._prefix = False  # inside a length prefix
        self._length = self._shift = 0  # the prefix read so far

    @property
    def mid_frame(self) -> bool:
        return self._body > 0 or self._prefix

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        data = await self._stream.read(n)
        self._follow(data)
        return data

    async def reset(self) -> None:
        self.was_reset = True
        self.topics_at_reset = _topics_of(self._pubsub, self._peer)
        await self._stream.reset()

    def _follow(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            if self._body:
                step = min(self._body, len(data) - i)
                self._body -= step
                i += step
                continue
            byte = data[i]
            i += 1
            if not self._prefix:
                self._length, self._shift = 0, 0
            self._length |= (byte & 0x7F) << self._shift
            self._shift += 7
            self._prefix = bool(byte & 0x80)
            if not self._prefix:
                self._body = self._length


def _topics_of(pubsub: Pubsub, peer_id: ID) -> list[str]:
    return [t for t, peers in pubsub.peer_topics.items() if peer_id in peers]


def _reject_reason(e: Exception) -> str:
    name = type(e).__name__
    if name == "ParseError":  # a length prefix that is no varint: framing is lost
        return "bad_frame"
    if name == "IncompleteReadError":
        return "truncated_frame"
    return "error_" + name


def install_pubsub_guard(pubsub: Pubsub, membership: Membership, metrics: P2PMetrics) -> None:
    """Replace pubsub's stream handlers and wrap ``push_msg`` (see module doc)."""
    compat.check_pubsub(pubsub)

    def reject(peer_id: ID, reason: str) -> None:
        metrics.inc(PUBSUB_STREAM_REJECTED, reason)
        peer_log.warning(reason, "pubsub frame rejected peer=%s reason=%s", peer_id, reason)

    def restore(peer_id: ID, topics: list[str]) -> None:
        """Put back subscriptions the library forgot on a reset (if the peer is still here)."""
        if not topics or not membership.is_member(peer_id):
            return
        if peer_id not in pubsub.host.get_network().connections:
            return
        for topic in topics:
            pubsub.handle_subscription(peer_id, rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic))

    def repeat_hello(peer_id: ID) -> None:
        """The peer opened a stream: it may have forgotten our subscriptions."""
        queue = pubsub.peer_queues.get(peer_id)
        if queue is not None and pubsub.topic_ids:
            queue.push(pubsub.get_hello_packet(), priority=True)

    async def guarded_stream_handler(stream: INetStream) -> None:
        try:
            peer_id = stream.muxed_conn.peer_id
        except Exception:
            await reset_quietly(stream)
            return
        if not membership.is_member(peer_id):
            metrics.inc(PUBSUB_STREAM_REJECTED, "not_member")
            await reset_quietly(stream)
            return
        repeat_hello(peer_id)
        watched = _FrameWatch(stream, pubsub, peer_id)
        bad_frames = 0
        reason = ""
        while not reason:
            try:
                # returns at the stream's end (or after the library reset it)
                await pubsub.continuously_read_stream(watched)  # type: ignore[arg-type]
                break
            except StreamEOF:
                break
            except Exception as e:
                if type(e).__name__ != "DecodeError":  # google.protobuf.message.DecodeError
                    reason = _reject_reason(e)
                elif bad_frames >= MAX_BAD_FRAMES:
                    reason = "too_many_bad_frames"
                else:  # the whole frame was read: skip it, keep reading
                    bad_frames += 1
                    reject(peer_id, "malformed_frame")
        if watched.was_reset:  # the library's own reset: an oversized frame
            reject(peer_id, "bad_frame")
            restore(peer_id, watched.topics_at_reset)
            return
        if not reason and watched.mid_frame:
            reason = "truncated_frame"
        if reason:
            reject(peer_id, reason)
            await reset_quietly(stream)

    def guard_push(original_push: compat.PushMsg) -> compat.PushMsg:
        async def guarded_push_msg(msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
            try:
                await original_push(msg_forwarder, msg)
            except Exception as e:
                metrics.inc(PUBSUB_TASK_ERROR, "push_msg_" + type(e).__name__)
                peer_log.warning(
                    "push_msg",
                    "pubsub message dropped forwarder=%s error=%s",
                    msg_forwarder,
                    type(e).__name__,
                )

        return guarded_push_msg

    compat.install_pubsub_guard(pubsub, guarded_stream_handler, guard_push)
