"""Every py-libp2p internal flocknode relies on, checked and patched in one place.

The membership gate (docs/protocol.md, "py-libp2p integration") needs hooks
py-libp2p does not offer as API: the swarm's ``dial_peer`` and the host's
``new_stream`` are shadowed by instance attributes (the library calls them as
``self.dial_peer`` / ``self.new_stream``), the built-in identify and ping
handlers and pubsub's stream handler are replaced, pubsub's ``push_msg`` is
wrapped, the auto-connector is switched off, pubsub's ``allowed_topics`` limits
the subscriptions it tracks, and ``Swarm.unblock_peer`` clears the swarm's
failed-dial cache. The dial gate also needs the health monitor off (it redials
through ``Swarm.dial_peer_replacement``, past the gate): ``connection_config``
pins that.

Each hook is checked before it is used: the installed version must be the
pinned one, the library's call sites must still go through the hooked names,
and every attribute must exist. A missing hook raises ``Libp2pCompatError``
(one line, exit code 2) and the node does not start: a gate that silently is
not there would let anyone dial, identify and ping it. ``verify_installed``
reads the gates back from a built host.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import CodeType
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.host.exceptions import StreamFailure
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from flocknode.errors import FlockError

LIBP2P_VERSION = "0.8.1"  # the pin in pyproject.toml and constraints.txt
GATE_ATTR = "__flocknode_gate__"  # set on every wrapper this module installs

StreamHandler = Callable[[INetStream], Awaitable[None]]
PushMsg = Callable[[ID, rpc_pb2.Message], Awaitable[None]]

# Where py-libp2p 0.8.1 reaches a hooked name: (class, method, name it must use, why).
CALL_SITES: tuple[tuple[type, str, str, str], ...] = (
    (Swarm, "new_stream", "dial_peer", "dial gate: the swarm dials through self.dial_peer"),
    (BasicHost, "connect", "dial_peer", "dial gate: host.connect dials through dial_peer"),
    (BasicHost, "_identify_peer", "new_stream", "stream gate: identify opens self.new_stream"),
    (Pubsub, "_handle_new_peer", "new_stream", "stream gate: pubsub opens host.new_stream"),
    (Pubsub, "continuously_read_stream", "push_msg", "pubsub guard: reads run self.push_msg"),
    (Pubsub, "handle_subscription", "allowed_topics", "topic filter: allowed_topics"),
    (Swarm, "notify_disconnected", "record_disconnect", "auto-connector: disconnect table"),
    (Swarm, "_schedule_auto_connect", "maybe_connect", "auto-connector: redial on disconnect"),
    (AutoConnector, "_periodic_check_task", "maybe_connect", "auto-connector: periodic dials"),
    (Swarm, "unblock_peer", "_negative_peer_cache", "dialer: unblock_peer clears failed dials"),
    (
        Swarm,
        "_is_health_monitoring_enabled",
        "enable_health_monitoring",
        "dial gate: health monitor off",
    ),
)
# What the pubsub guard reads and calls on a Pubsub (flocknode.p2p.pubsub_guard).
PUBSUB_ATTRS = (
    "continuously_read_stream",
    "push_msg",
    "handle_subscription",
    "get_hello_packet",
    "peer_topics",
    "peer_queues",
    "topic_ids",
    "allowed_topics",
    "router",
    "host",
)


class Libp2pCompatError(FlockError):
    """The installed py-libp2p lacks a hook the membership gate needs."""

    exit_code = 2


def _missing(what: str, why: str) -> Libp2pCompatError:
    return Libp2pCompatError(
        f"py-libp2p: {what} is missing ({why}); flocknode needs libp2p=={LIBP2P_VERSION} "
        "as pinned in constraints.txt"
    )


def _names(code: CodeType) -> set[str]:
    """Every attribute and global name ``code`` and the functions inside it use."""
    out = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            out |= _names(const)
    return out


def check_library() -> None:
    """The installed py-libp2p is the pinned version and its call sites are the ones
    the gates hook. Raises ``Libp2pCompatError`` naming the first difference."""
    try:
        version = importlib.metadata.version("libp2p")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    if version != LIBP2P_VERSION:
        raise Libp2pCompatError(
            f"py-libp2p {version} is installed; flocknode needs libp2p=={LIBP2P_VERSION} "
            "(its membership gate hooks that version's internals; see constraints.txt)"
        )
    for cls, method, name, why in CALL_SITES:
        fn = getattr(cls, method, None)
        if isinstance(fn, property):
            fn = fn.fget
        code = getattr(fn, "__code__", None)
        if not isinstance(code, CodeType):
            raise _missing(f"{cls.__name__}.{method}", why)
        if name not in _names(code):
            raise _missing(f"{cls.__name__}.{method} using {name}", why)
    fields = getattr(ConnectionConfig, "__dataclass_fields__", {})
    if "enable_health_monitoring" not in fields:
        raise _missing("ConnectionConfig.enable_health_monitoring", "dial gate: health monitor off")


def connection_config(*, max_connections: int, dial_timeout: float) -> ConnectionConfig:
    """One connection per peer; the health monitor off (it would redial past the dial gate)."""
    return ConnectionConfig(
        max_connections_per_peer=1,
        max_connections=max_connections,
        high_watermark=max_connections,
        dial_timeout=dial_timeout,
        enable_health_monitoring=False,
    )


def _mark(fn: Any, gate: str) -> Any:
    setattr(fn, GATE_ATTR, gate)
    return fn


def _is_gate(obj: object, gate: str) -> bool:
    return getattr(obj, GATE_ATTR, None) == gate


def _callable(owner: object, name: str, where: str, why: str) -> Callable[..., Any]:
    fn = getattr(owner, name, None)
    if not callable(fn) or getattr(fn, "__isabstractmethod__", False):  # only the interface
        raise _missing(f"{where}.{name}", why)
    return fn


def install_dial_gate(network: object, refuse: Callable[[ID], str | None]) -> None:
    """Every dial of the swarm asks ``refuse(peer)`` first: a reason refuses it
    (``SwarmException``), None lets it through, and an error in ``refuse`` refuses
    too. ``refuse`` counts what it refuses."""
    original = _callable(network, "dial_peer", "Swarm", "dial gate")

    async def gated_dial_peer(peer_id: ID, *args: Any, **kwargs: Any) -> list[INetConn]:
        try:
            reason = refuse(peer_id)
        except Exception as e:
            reason = f"gate_error {type(e).__name__}"
        if reason is not None:
            raise SwarmException(f"dial to {peer_id} refused by the dial gate: {reason}")
        conns: list[INetConn] = await original(peer_id, *args, **kwargs)
        return conns

    network.dial_peer = _mark(gated_dial_peer, "dial")  # type: ignore[attr-defined]


def install_stream_gate(
    host: IHost, refuse: Callable[[ID, Sequence[TProtocol]], str | None]
) -> None:
    """Every stream the host opens asks ``refuse(peer, protocols)`` first: a reason
    refuses it (``StreamFailure``: identify gives up, pubsub does not retry), None
    lets it through, an error in ``refuse`` refuses too."""
    original = _callable(host, "new_stream", "BasicHost", "stream gate")

    async def gated_new_stream(
        peer_id: ID, protocol_ids: Sequence[TProtocol], *args: Any, **kwargs: Any
    ) -> INetStream:
        try:
            reason = refuse(peer_id, protocol_ids)
        except Exception as e:
            reason = f"gate_error {type(e).__name__}"
        if reason is not None:
            raise StreamFailure(f"stream to {peer_id} refused by the stream gate: {reason}")
        stream: INetStream = await original(peer_id, protocol_ids, *args, **kwargs)
        return stream

    host.new_stream = _mark(gated_new_stream, "stream")  # type: ignore[method-assign]


def _handlers(host: IHost) -> dict[Any, Any]:
    mux = _callable(host, "get_mux", "BasicHost", "built-in handler gate")()
    handlers = getattr(mux, "handlers", None)
    if not isinstance(handlers, dict):
        raise _missing("Multiselect.handlers", "built-in handler gate")
    return handlers


def gate_builtin_handlers(
    host: IHost,
    protocols: Iterable[TProtocol],
    wrap: Callable[[TProtocol, StreamHandler], StreamHandler],
) -> None:
    """Replace the handler ``new_host`` installed for each of ``protocols`` with
    ``wrap(protocol, original)``. Every one must be there."""
    handlers = _handlers(host)
    for protocol in protocols:
        original = handlers.get(protocol)
        if not callable(original):
            raise _missing(f"the built-in handler of {protocol}", "built-in handler gate")
        host.set_stream_handler(protocol, _mark(wrap(protocol, original), "builtin"))


def disable_auto_connector(network: object) -> None:
    """The auto-connector dials any peer in the peerstore to keep 100+ connections,
    and records every disconnect in a table only its dials prune: both are turned
    off (our dialer decides whom to dial, members only)."""
    connector = getattr(network, "auto_connector", None)
    if connector is None:
        raise _missing("Swarm.auto_connector", "auto-connector off")
    _callable(connector, "maybe_connect", "AutoConnector", "auto-connector off")
    _callable(connector, "record_disconnect", "AutoConnector", "auto-connector off")

    async def no_auto_connect() -> None:
        return None

    def no_record(peer_id: ID) -> None:
        return None

    connector.maybe_connect = _mark(no_auto_connect, "auto_connect")
    connector.record_disconnect = _mark(no_record, "auto_connect")


def check_pubsub(pubsub: Pubsub) -> None:
    """Everything the pubsub guard and the topic filter use is on ``pubsub``."""
    for name in PUBSUB_ATTRS:
        if not hasattr(pubsub, name):
            raise _missing(f"Pubsub.{name}", "pubsub guard")
    _callable(pubsub.router, "get_protocols", "router", "pubsub guard")


def install_pubsub_guard(
    pubsub: Pubsub, handler: StreamHandler, wrap_push: Callable[[PushMsg], PushMsg]
) -> None:
    """``handler`` serves every protocol of the router (replacing the handler
    ``Pubsub.__init__`` registered); ``push_msg`` becomes ``wrap_push(push_msg)``."""
    check_pubsub(pubsub)
    protocols = list(pubsub.router.get_protocols())
    if not protocols:
        raise _missing("the router's protocols", "pubsub guard")
    for protocol in protocols:
        pubsub.host.set_stream_handler(protocol, _mark(handler, "pubsub"))
    pubsub.push_msg = _mark(wrap_push(pubsub.push_msg), "push_msg")  # type: ignore[method-assign]


def restrict_topics(pubsub: Pubsub, topics: Iterable[str]) -> None:
    """Track peers' subscriptions to ``topics`` only (checked by ``check_pubsub``)."""
    pubsub.allowed_topics = frozenset(topics)


def forget_failed_dial(network: object, peer: ID) -> None:
    """Clear the swarm's mark on a peer whose last dial failed (it refuses to redial
    it for 60 s): our dialer's backoff governs retries."""
    unblock = _callable(network, "unblock_peer", "Swarm", "dialer: clear failed dials")
    unblock(peer)


# the attributes from a connection down to its TCP socket (swarm connection ->
# yamux -> Noise session -> Noise framing -> raw connection -> trio stream)
_SOCKET_PATH = ("muxed_conn", "secured_conn", "conn", "read_writer", "read_write_closer", "stream")


def tcp_socket(conn: INetConn) -> trio.socket.SocketType | None:
    """The TCP socket under ``conn`` (None for another transport, or when the
    library's layers changed: the caller then leaves the socket as it is)."""
    todo: list[tuple[object, int]] = [(conn, 0)]
    while todo:
        obj, depth = todo.pop()
        if isinstance(obj, trio.SocketStream):
            return obj.socket
        if depth < 10:
            todo += [(getattr(obj, a), depth + 1) for a in _SOCKET_PATH if hasattr(obj, a)]
    return None


def verify_installed(host: IHost, pubsub: Pubsub, builtins: Iterable[TProtocol]) -> None:
    """Every gate is in force on a built host (``builtins``: the gated built-in
    protocols). Raises ``Libp2pCompatError`` naming the first that is not."""
    network = host.get_network()
    connector = getattr(network, "auto_connector", None)
    config = getattr(network, "connection_config", None)
    if (type(host), type(network), type(pubsub)) != (BasicHost, Swarm, Pubsub):
        raise Libp2pCompatError(
            f"py-libp2p: built a {type(host).__name__} on a {type(network).__name__}; the "
            "gates are checked against BasicHost, Swarm and Pubsub"
        )
    handlers = _handlers(host)
    found = {
        "the dial gate": _is_gate(vars(network).get("dial_peer"), "dial"),
        "the stream gate": _is_gate(vars(host).get("new_stream"), "stream"),
        "the built-in handler gate": all(_is_gate(handlers.get(p), "builtin") for p in builtins),
        "the auto-connector switch": connector is not None
        and all(
            _is_gate(vars(connector).get(n), "auto_connect")
            for n in ("maybe_connect", "record_disconnect")
        ),
        "the health monitor switch": config is not None
        and getattr(config, "enable_health_monitoring", None) is False,
        "the pubsub stream guard": all(
            _is_gate(handlers.get(p), "pubsub") for p in pubsub.router.get_protocols()
        ),
        "the push_msg guard": _is_gate(vars(pubsub).get("push_msg"), "push_msg"),
        "the failed-dial reset": callable(getattr(network, "unblock_peer", None)),
    }
    for name, ok in found.items():
        if not ok:
            raise Libp2pCompatError(f"py-libp2p: {name} is not installed on this host")
