"""Keep bytes from peers from ending the process through py-libp2p's pubsub.

py-libp2p 0.8.1 has two holes (LIBRARIES.md, and reproduced while building this):
- ``Pubsub.stream_handler`` catches only StreamError, ParseError and
  IncompleteReadError; a frame that is not a valid protobuf RPC raises
  ``google.protobuf.message.DecodeError``, which escapes through the swarm and
  ends ``host.run``;
- ``Pubsub.push_msg`` runs as a pubsub task per received message; a message whose
  ``key`` field is not a valid public key makes ``signature_validator`` raise,
  which stops the pubsub service.

``install_pubsub_guard`` replaces the stream handler registered for every
protocol id of the router (``Pubsub.__init__`` has already registered the
original) with one that refuses non-members, catches everything the original
lets escape, resets the stream and counts it; and wraps ``push_msg`` the same
way. Cancellation is never swallowed.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from flocknode.logs import PeerLog
from flocknode.p2p.membership import Membership
from flocknode.p2p.metrics import PUBSUB_STREAM_REJECTED, PUBSUB_TASK_ERROR, P2PMetrics
from flocknode.p2p.stream_io import reset_quietly

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines a peer can cause: rate-limited


class _ResetWatch:
    """A transparent stream proxy that notes whether the library reset the stream.

    The original handler resets the stream itself when it rejects a frame
    (oversized, bad length prefix, cut short); the flag lets us count those too.
    """

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self.was_reset = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def reset(self) -> None:
        self.was_reset = True
        await self._stream.reset()


def _error_reason(e: Exception) -> str:
    if type(e).__name__ == "DecodeError":  # google.protobuf.message.DecodeError
        return "malformed_frame"
    return "error_" + type(e).__name__


def install_pubsub_guard(pubsub: Pubsub, membership: Membership, metrics: P2PMetrics) -> None:
    """Replace pubsub's stream handlers and wrap ``push_msg`` (see module doc)."""
    original_handler = pubsub.stream_handler
    original_push = pubsub.push_msg

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
        watched = _ResetWatch(stream)
        try:
            await original_handler(watched)  # type: ignore[arg-type]
        except Exception as e:
            reason = _error_reason(e)
            metrics.inc(PUBSUB_STREAM_REJECTED, reason)
            peer_log.warning(
                "rejected", "pubsub stream rejected peer=%s reason=%s", peer_id, reason
            )
            await reset_quietly(stream)
            with contextlib.suppress(Exception):
                pubsub._handle_dead_peer(peer_id)
            return
        if watched.was_reset:
            metrics.inc(PUBSUB_STREAM_REJECTED, "bad_frame")
            peer_log.info(
                "bad_frame", "pubsub stream reset by libp2p after a bad frame peer=%s", peer_id
            )

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

    for protocol in pubsub.router.get_protocols():
        pubsub.host.set_stream_handler(protocol, guarded_stream_handler)
    pubsub.push_msg = guarded_push_msg  # type: ignore[method-assign]
