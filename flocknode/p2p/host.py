"""The libp2p host service: transport, pubsub router, membership gate, discovery.

One ``P2PHost`` per node. ``run()`` listens, starts GossipSub and the dialer,
reports the bound addresses through ``task_status`` and ``started``, and on
``stop()`` (or cancellation) closes everything in reverse, the listener
included. Configuration: Noise only (py-libp2p's default also accepts plaintext and
secio), yamux, one connection per peer, GossipSub heartbeat 1 s, strict
signing, no mDNS, no health monitor.

Only members talk to us: a connection from a peer that is not a member is
closed as soon as the Noise handshake has told us who it is, every stream
handler checks the peer again (py-libp2p's identify, identify-push and ping
handlers included: they reset a non-member's stream unanswered), and a periodic
sweep drops peers that stopped being members.

And we only dial whom we mean to: py-libp2p dials by itself (pubsub re-opens its
stream to a peer whose connection just ended, every ~0.5 s while it fails, and
identify does the same), so a peer that closes our connections (it does not see
us as a member) would get a new Noise handshake every half second. The dial gate
refuses such dials to non-members and to members the dialer is backing off from;
the dialer's own dials and ``open_stream`` pass (``explicit_dial``). Likewise
py-libp2p opens streams by itself on every new connection (identify asks the
peer who it is, pubsub sends its subscriptions): the stream gate refuses those
to non-members, so a non-member's identify reply never reaches the peerstore.

Nothing about a non-member is kept: its peerstore entry is dropped when its
connection ends and by the periodic sweep (which also catches members whose
membership ended, and entries other members' gossip added), the dialer forgets
former members, and py-libp2p's auto-connector (disabled) keeps no table of
disconnects. What remains are counters by reason, never by peer.

Every hook into py-libp2p goes through ``flocknode.p2p.compat``: the host is not
built if one is missing, and a gate whose check fails refuses (fail closed).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING_PROTOCOL_ID
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL_ID
from libp2p.identity.identify_push.identify_push import ID_PUSH as IDENTIFY_PUSH_PROTOCOL_ID
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from flocknode.errors import FlockError
from flocknode.identity.keys import PeerKey
from flocknode.logs import PeerLog, limit_library_logs
from flocknode.p2p import compat
from flocknode.p2p.discovery import (
    Backoff,
    PeerDialer,
    dial_is_explicit,
    explicit_dial,
    parse_bootstrap,
)
from flocknode.p2p.membership import Membership
from flocknode.p2p.metrics import (
    BUILTIN_REFUSED,
    CONN_REFUSED,
    DIAL_REFUSED,
    OUTBOUND_REFUSED,
    P2PMetrics,
)
from flocknode.p2p.pubsub_guard import install_pubsub_guard
from flocknode.p2p.stream_io import reset_quietly

if TYPE_CHECKING:  # trio-typing's stubs shadow trio's own TaskStatus for mypy
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines a peer can cause: rate-limited

StreamHandler = Callable[[INetStream], Awaitable[None]]
GOSSIP_PROTOCOLS = (PROTOCOL_ID_V11, PROTOCOL_ID)
# py-libp2p's built-in handlers that answer only members (label for the metric)
MEMBERS_ONLY_BUILTINS = {
    IDENTIFY_PROTOCOL_ID: "identify",
    IDENTIFY_PUSH_PROTOCOL_ID: "identify_push",
    PING_PROTOCOL_ID: "ping",
}
CLOSE_TIMEOUT = 5.0


class ListenError(FlockError):
    """A configured listen address could not be bound (in use, not local...)."""


@dataclass(frozen=True)
class HostConfig:
    """Network settings of a node (the ``[p2p]`` section of node.toml)."""

    listen_addrs: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4001",)
    announce_addrs: tuple[str, ...] = ()  # what peers should dial, if not the listen addrs
    bootstrap: tuple[str, ...] = ()  # "/ip4/../tcp/../p2p/<id>" of member nodes
    dial_timeout: float = 10.0
    redial_base: float = 1.0
    redial_cap: float = 60.0
    discovery_interval: float = 5.0
    stable_after: float = 10.0  # a connection that ends sooner counts as a failed dial
    # a connection whose sent data goes unacknowledged this long is closed by the
    # kernel (TCP_USER_TIMEOUT): a peer cut off by the network, not just slow
    tcp_user_timeout: float = 10.0
    max_connections: int = 600
    gossip_degree: int = 6
    gossip_degree_low: int = 4
    gossip_degree_high: int = 12


def build_host(peer_key: PeerKey, config: HostConfig) -> IHost:
    """A py-libp2p host with Noise only, yamux, one connection per peer.

    Raises ``compat.Libp2pCompatError`` if the installed py-libp2p is not the one
    whose internals the gates hook."""
    compat.check_library()
    kp = peer_key.keypair
    noise = NoiseTransport(kp, noise_privkey=new_x25519_key_pair().private_key)
    conn_config = compat.connection_config(
        max_connections=config.max_connections, dial_timeout=config.dial_timeout
    )
    return new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        connection_config=conn_config,
        listen_addrs=[Multiaddr(a) for a in config.listen_addrs],
        announce_addrs=[Multiaddr(a) for a in config.announce_addrs] or None,
        enable_mDNS=False,
        enable_upnp=False,
    )


def set_user_timeout(conn: INetConn, seconds: float) -> bool:
    """Have the kernel close ``conn``'s TCP socket once data it sent stays
    unacknowledged for ``seconds`` (docs/protocol.md, "Faults and the promises
    kept under them", partition). Without it a connection whose packets are
    dropped stays open for many minutes (TCP retransmits with backoff), and
    every stream on it waits: a voter could not leave an unreachable proposer's
    seat out by its collection deadline, and after the network heals the
    connection resumes only at the next retransmission, tens of seconds later.
    False when ``conn`` has no TCP socket to set (another transport)."""
    sock = compat.tcp_socket(conn)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
    except OSError:
        return False
    return True


class _MembershipNotifee(INotifee):
    """Closes connections of non-members; wakes the dialer when a peer drops."""

    def __init__(self, service: P2PHost) -> None:
        self._service = service

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        set_user_timeout(conn, self._service.config.tcp_user_timeout)
        self._service._on_connected(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._service._on_disconnected(conn.muxed_conn.peer_id)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


class P2PHost:
    """The node's libp2p host as a service with a visible lifecycle."""

    def __init__(
        self,
        peer_key: PeerKey,
        membership: Membership,
        config: HostConfig | None = None,
        metrics: P2PMetrics | None = None,
    ) -> None:
        self.config = config or HostConfig()
        self.membership = membership
        self.metrics = metrics or P2PMetrics()
        self.host = build_host(peer_key, self.config)
        self.peer_id: ID = self.host.get_id()
        compat.disable_auto_connector(self.host.get_network())
        self.router = GossipSub(
            protocols=list(GOSSIP_PROTOCOLS),
            degree=self.config.gossip_degree,
            degree_low=self.config.gossip_degree_low,
            degree_high=self.config.gossip_degree_high,
            heartbeat_interval=1,
        )
        self.pubsub = Pubsub(self.host, self.router, strict_signing=True)
        install_pubsub_guard(self.pubsub, membership, self.metrics)
        self.dialer = PeerDialer(
            self.host,
            membership,
            self.metrics,
            bootstrap=parse_bootstrap(self.config.bootstrap),
            backoff=Backoff(self.config.redial_base, self.config.redial_cap),
            interval=self.config.discovery_interval,
            dial_timeout=self.config.dial_timeout,
            stable_after=self.config.stable_after,
        )
        self.host.get_network().register_notifee(_MembershipNotifee(self))
        compat.gate_builtin_handlers(self.host, MEMBERS_ONLY_BUILTINS, self._members_only)
        compat.install_dial_gate(self.host.get_network(), self._dial_refusal)
        compat.install_stream_gate(self.host, self._stream_refusal)
        compat.verify_installed(self.host, self.pubsub, MEMBERS_ONLY_BUILTINS)
        self.started = trio.Event()
        self.stopped = trio.Event()
        self._stop = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._closing: set[ID] = set()  # non-members being closed (entries leave when closed)

    # -- lifecycle -------------------------------------------------------
    async def run(
        self, *, task_status: TaskStatus[list[Multiaddr]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listen = [Multiaddr(a) for a in self.config.listen_addrs]
        not_bound: ListenError | None = None
        try:
            async with self.host.run(listen):
                try:
                    bound = self.host.get_transport_addrs()
                    if len(bound) < len(listen):  # py-libp2p only logs a failed bind
                        not_bound = ListenError(
                            f"p2p.listen: could not listen on all of "
                            f"{[str(a) for a in listen]} (bound: {[str(a) for a in bound]}); "
                            "is the port in use or the address not on this machine?"
                        )
                    else:
                        await self._serve(task_status)
                finally:
                    self._nursery = None
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await self.host.close()
        finally:
            self.stopped.set()
            log.info("p2p host stopped peer=%s", self.peer_id)
        if not_bound is not None:
            raise not_bound

    async def _serve(self, task_status: TaskStatus[list[Multiaddr]]) -> None:
        async with (
            background_trio_service(self.pubsub),
            background_trio_service(self.router),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            limit_library_logs()  # py-libp2p's peer-caused lines (its modules are loaded now)
            nursery.start_soon(self.dialer.run)
            nursery.start_soon(self._sweep_non_members)
            addrs = self.listen_addrs()
            log.info("p2p host listening peer=%s addrs=%s", self.peer_id, addrs)
            self.started.set()
            task_status.started(addrs)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> trio.Event:
        """Set once ``stop()`` was called; dependent services end on it."""
        return self._stop

    def listen_addrs(self) -> list[Multiaddr]:
        """The bound listen addresses (port 0 resolved) with ``/p2p/<id>``."""
        suffix = Multiaddr(f"/p2p/{self.peer_id}")
        return [a.encapsulate(suffix) for a in self.host.get_transport_addrs()]

    def announce_addrs(self) -> list[Multiaddr]:
        """What to register on chain: announce addrs if configured, else the bound ones."""
        if self.config.announce_addrs:
            return [Multiaddr(a) for a in self.config.announce_addrs]
        return list(self.host.get_transport_addrs())

    # -- connections and streams ----------------------------------------
    def connected_peers(self) -> list[ID]:
        return self.host.get_connected_peers()

    def peers_connected_for(self, seconds: float) -> set[ID]:
        """The members connected now whose connection has lasted ``seconds`` or more."""
        return self.dialer.connected_for(seconds)

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Register ``handler``; anything it raises is logged and the stream reset.

        (An exception escaping a stream handler ends the swarm in py-libp2p 0.8.1.)
        """

        async def guarded(stream: INetStream) -> None:
            try:
                await handler(stream)
            except Exception as e:
                log.warning("stream handler failed protocol=%s error=%r", protocol, e)
                await reset_quietly(stream)

        self.host.set_stream_handler(TProtocol(protocol), guarded)

    async def open_stream(self, peer_id: ID, protocols: Sequence[str]) -> INetStream:
        """A new stream to a member, dialing it first from its known addresses."""
        if peer_id not in self.host.get_connected_peers():
            addrs = self.dialer.addrs_for(peer_id)
            if addrs:
                self.host.get_peerstore().add_addrs(peer_id, addrs, 3600)
        with explicit_dial(peer_id):  # we asked for this stream: the dial gate lets it dial
            return await self.host.new_stream(peer_id, [TProtocol(p) for p in protocols])

    # -- membership gate -------------------------------------------------
    def _members_only(self, protocol: TProtocol, handler: StreamHandler) -> StreamHandler:
        """``handler`` (identify, identify-push or ping, as ``new_host`` installed it)
        for members; a non-member's stream is reset before the handler sees it."""
        label = MEMBERS_ONLY_BUILTINS[protocol]

        async def gated(stream: INetStream) -> None:
            try:
                peer_id = stream.muxed_conn.peer_id
                member = self.membership.is_member(peer_id)
            except Exception:
                member = False
            if not member:
                self.metrics.inc(BUILTIN_REFUSED, label)
                await reset_quietly(stream)
                return
            try:
                await handler(stream)
            except Exception as e:  # never let it end the swarm (see set_stream_handler)
                log.warning("built-in handler failed protocol=%s error=%r", label, e)
                await reset_quietly(stream)

        return gated

    def _dial_refusal(self, peer_id: ID) -> str | None:
        """The dial gate: why a dial to ``peer_id`` is refused (counted); None to allow.

        py-libp2p dials by itself (pubsub and identify redial a peer whose connection
        ended): those dials pass only to members we are not backing off from. The
        dialer's own dials and ``open_stream`` pass (``explicit_dial``). A check that
        fails refuses the dial."""
        reason: str | None
        try:
            if dial_is_explicit(peer_id):
                return None
            conns = self.host.get_network().get_connections(peer_id)
            if any(not getattr(c, "is_closed", False) for c in conns):
                return None  # dial_peer returns the open connection, nothing is dialed
            if not self.membership.is_member(peer_id):
                reason = "not_member"
            elif self.dialer.backing_off(peer_id):
                reason = "backoff"
            else:
                return None
        except Exception as e:
            log.debug("dial gate check failed peer=%s error=%r", peer_id, e)
            reason = "gate_error"
        self.metrics.inc(DIAL_REFUSED, reason)
        log.debug("dial refused peer=%s reason=%s", peer_id, reason)
        return reason

    def _stream_refusal(self, peer_id: ID, protocol_ids: Sequence[TProtocol]) -> str | None:
        """The stream gate: py-libp2p opens streams by itself on every new connection
        (identify asks who the peer is, pubsub sends its subscriptions); to a
        non-member they are refused, so its identify reply never reaches the
        peerstore. ``open_stream`` passes (``explicit_dial``). A check that fails
        refuses the stream. The metric's reason is the protocol."""
        try:
            if (
                dial_is_explicit(peer_id)
                or peer_id == self.peer_id
                or self.membership.is_member(peer_id)
            ):
                return None
            reason = "not_member"
        except Exception as e:
            log.debug("stream gate check failed peer=%s error=%r", peer_id, e)
            reason = "gate_error"
        self.metrics.inc(OUTBOUND_REFUSED, _protocol_label(protocol_ids))
        log.debug("stream refused peer=%s protocols=%s", peer_id, protocol_ids)
        return reason

    def _on_connected(self, peer_id: ID) -> None:
        if self.membership.is_member(peer_id):
            self.dialer.connected(peer_id)
            return
        self.metrics.inc(CONN_REFUSED, "not_member")
        peer_log.info("not_member", "closing connection from non-member peer=%s", peer_id)
        if self._nursery is not None:
            self._closing.add(peer_id)
            self._nursery.start_soon(self._close_peer, peer_id)

    def _on_disconnected(self, peer_id: ID) -> None:
        self.dialer.disconnected(peer_id)
        self.dialer.wake()
        if not self.membership.is_member(peer_id):
            self._forget_peer(peer_id)

    async def _close_peer(self, peer_id: ID) -> None:
        try:
            await self.host.get_network().close_peer(peer_id)
        except Exception as e:
            log.debug("close_peer failed peer=%s error=%r", peer_id, e)
        finally:
            self._closing.discard(peer_id)

    def _forget_peer(self, peer_id: ID) -> None:
        """Drop what py-libp2p keeps about a peer that is not a member (public API):
        its peerstore entry (addrs, protocols, key, metadata, signed record) and the
        swarm's failed-dial mark."""
        if peer_id == self.peer_id:
            return
        peerstore = self.host.get_peerstore()
        with contextlib.suppress(Exception):  # gone already: nothing to drop
            if peerstore.has_peer(peer_id):
                peerstore.clear_peerdata(peer_id)
        compat.forget_failed_dial(self.host.get_network(), peer_id)

    def _forget_non_members(self) -> None:
        """Peerstore entries of non-members that are not connected: members whose
        membership ended while away, peers other members' gossip told us about
        (GossipSub peer exchange), anything a disconnect left behind."""
        connected = set(self.host.get_connected_peers())
        for peer in self.host.get_peerstore().peer_ids():
            if peer not in connected and not self.membership.is_member(peer):
                self._forget_peer(peer)

    async def _sweep_non_members(self) -> None:
        """Drop peers whose membership ended (unstaked, deregistered) and forget them."""
        while True:
            await trio.sleep(self.config.discovery_interval)
            for peer in self.host.get_connected_peers():
                if not self.membership.is_member(peer) and peer not in self._closing:
                    self.metrics.inc(CONN_REFUSED, "membership_ended")
                    await self._close_peer(peer)
            self._forget_non_members()
            limit_library_logs()  # loggers of py-libp2p modules imported since (lazily)


def _protocol_label(protocol_ids: Sequence[TProtocol]) -> str:
    """A metric reason for a stream's protocols (a fixed set, never a peer's input)."""
    for p in protocol_ids:
        if p in MEMBERS_ONLY_BUILTINS:
            return MEMBERS_ONLY_BUILTINS[p]
        if p in GOSSIP_PROTOCOLS:
            return "pubsub"
    return "other"
