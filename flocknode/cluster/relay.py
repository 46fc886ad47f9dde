"""A TCP relay in front of each cluster node's p2p port (``--chaos latency``;
docs/protocol.md, "Faults and the promises kept under them").

The kernel here has no netem, so delay and loss between nodes come from a
relay. With ``latency`` in the chaos spec, ``cluster up`` gives every node a
relay on a loopback port of its own that forwards to the node's p2p port, and
the node registers the relay's address (``p2p.announce``): the others dial it
there. Each accepted connection is piped both ways, a reader and a writer task
per direction joined by a channel of ``QUEUE_CHUNKS`` chunks of at most
``CHUNK`` bytes: a full channel stops the reader, so a slow side pushes back
on its sender through TCP's own flow control, and a connection holds at most
2 x QUEUE_CHUNKS x CHUNK bytes. The writer sends each chunk at the release
time cluster/linkfault.py gives it: bytes are delayed, never dropped or
reordered.

A fault on node N (``Relays.fault``) applies to the connections through N's
relay (those the others dialed to N) and to the connections N dialed through
the others' relays (found by the local port of the dialing socket, which
/proc says belongs to N's process): every p2p link of N is slowed, whichever
side dialed it; or, given a set of peers, only N's links to them (on N's
relay, the connections their processes dialed; on theirs, those N dialed).
The relays run in a trio loop in a thread of ``cluster up``'s process; the
chaos thread reaches them through ``trio.from_thread``.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from flocknode.cluster.launcher import ClusterState
from flocknode.cluster.linkfault import ActiveFault, LinkFault, Release, Schedule, local_ports

HOST = "127.0.0.1"  # relays listen and connect on loopback only
CHUNK = 16 << 10  # bytes read at once
QUEUE_CHUNKS = 16  # chunks in flight per direction: 256 KiB
MAX_CONNECTIONS = 64  # per relay; more are closed on accept
FAULT_SECONDS = 10.0  # a fault's length: longer than a pause, 2-3 rounds of a test cluster
MAX_DELAY_MS = 5000.0  # --latency-ms: past a few seconds it is an outage, not latency
LINGER_0 = struct.pack("ii", 1, 0)  # close with a reset
Stream = trio.abc.HalfCloseableStream


@dataclass
class RelayStats:
    """What one relay carried and did (touched only in the relays' trio thread)."""

    connections: int = 0
    refused: int = 0  # accepted but closed: too many, or the node not listening
    chunks: int = 0
    bytes: int = 0
    delayed: int = 0  # chunks released under a fault
    lost: int = 0  # chunks held for a retransmission timeout
    cuts: int = 0
    max_hold_ms: float = 0.0  # the longest a chunk was held

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["max_hold_ms"] = round(self.max_hold_ms, 1)
        return d


@dataclass(eq=False)
class Connection:
    """One relayed connection: its dialer's local port and its own fault (set
    when the faulted node dialed it, through another node's relay)."""

    peer_port: int
    fault: ActiveFault | None = None


class _Cut(Exception):
    pass


@dataclass(eq=False)
class Relay:
    """Forwards ``HOST:listen_port`` to ``HOST:target_port`` (the node)."""

    name: str
    listen_port: int
    target_port: int
    rng: random.Random
    fault: ActiveFault | None = None  # on every connection through this relay
    conns: set[Connection] = field(default_factory=set)
    stats: RelayStats = field(default_factory=RelayStats)
    # ports of the faulted node's sockets, to catch a connection it dials during
    # its fault (None: no fault on another node)
    dialer_of_fault: Callable[[], set[int]] | None = None
    dialer_fault: ActiveFault | None = None

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio.serve_tcp(self._handle, self.listen_port, host=HOST, task_status=task_status)

    async def _handle(self, down: trio.SocketStream) -> None:
        # the connection may go before it is piped: only this one ends
        with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await self._relay(down)

    async def _relay(self, down: trio.SocketStream) -> None:
        async with down:
            if len(self.conns) >= MAX_CONNECTIONS:
                self.stats.refused += 1
                return
            try:
                up = await trio.open_tcp_stream(HOST, self.target_port)
            except OSError:
                self.stats.refused += 1
                return
            async with up:
                conn = Connection(down.socket.getpeername()[1])
                if self.dialer_of_fault is not None:
                    ports = await trio.to_thread.run_sync(self.dialer_of_fault)
                    if conn.peer_port in ports:
                        conn.fault = self.dialer_fault
                self.conns.add(conn)
                self.stats.connections += 1
                try:
                    await self.pipe_both(conn, down, up)
                finally:
                    self.conns.discard(conn)

    async def pipe_both(self, conn: Connection, down: Stream, up: Stream) -> None:
        """Pipe ``down`` and ``up`` both ways until both sides closed theirs,
        or an error or a cut on either way ends both."""
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                for src, dst in ((down, up), (up, down)):
                    sched = Schedule(random.Random(self.rng.getrandbits(64)))
                    nursery.start_soon(self._pipe, conn, src, dst, sched, scope)

    def _active(self, conn: Connection) -> ActiveFault | None:
        return self.fault or conn.fault

    async def _pipe(
        self,
        conn: Connection,
        src: Stream,
        dst: Stream,
        sched: Schedule,
        scope: trio.CancelScope,
    ) -> None:
        """One direction; an error or a cut on it ends the whole connection."""
        send, recv = trio.open_memory_channel[tuple[Release, bytes]](QUEUE_CHUNKS)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, conn, src, send, sched)
                await self._write(recv, dst)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            scope.cancel()
        except* _Cut:
            self.stats.cuts += 1
            for s in (src, dst):  # a reset, not an orderly close: SO_LINGER 0
                if isinstance(s, trio.SocketStream):
                    with contextlib.suppress(OSError):
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            scope.cancel()

    async def _read(
        self,
        conn: Connection,
        src: Stream,
        send: trio.MemorySendChannel[tuple[Release, bytes]],
        sched: Schedule,
    ) -> None:
        async with send:
            while data := await src.receive_some(CHUNK):
                now = trio.current_time()
                fault = self._active(conn)
                r = sched.release(now, fault)
                st = self.stats
                st.chunks, st.bytes = st.chunks + 1, st.bytes + len(data)
                if fault is not None:
                    st.delayed += 1
                    st.lost += r.lost > 0
                    st.max_hold_ms = max(st.max_hold_ms, (r.at - now) * 1000)
                await send.send((r, data))

    async def _write(
        self, recv: trio.MemoryReceiveChannel[tuple[Release, bytes]], dst: Stream
    ) -> None:
        async with recv:
            async for r, data in recv:
                await trio.sleep_until(r.at)
                if r.cut:
                    raise _Cut
                await dst.send_all(data)
        # the source closed its side: so does this direction (half-close)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await dst.send_eof()


def socket_ports(pid: int) -> set[int]:
    """The local TCP ports of process ``pid``'s sockets (empty if it is gone)."""
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    tables = ""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            tables += Path(table).read_text()
    return local_ports(tables, inodes)


class Relays:
    """One relay per node, served in a trio loop in a thread of its own."""

    def __init__(
        self, relays: dict[str, Relay], seed: int, settings: LinkFault | None = None
    ) -> None:
        self.relays = relays
        self.settings = settings or LinkFault()
        self._rng = random.Random(seed)  # the faults' draws (the chaos thread)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._run, name="relays", daemon=True)

    @classmethod
    def start(cls, ports: dict[str, tuple[int, int]], seed: int, **kw: Any) -> Relays:
        """Relays for ``{name: (listen_port, target_port)}``, serving once this returns."""
        rng = random.Random(seed)
        relays = {
            name: Relay(name, listen, target, random.Random(rng.getrandbits(64)))
            for name, (listen, target) in ports.items()
        }
        self = cls(relays, seed, **kw)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as e:  # a relay could not listen: start() raises it
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            for r in self.relays.values():
                await nursery.start(r.serve)
            self._ready.set()

    def close(self) -> None:
        """Stop every relay and close every relayed connection (idempotent)."""
        if self._token is not None and self._scope is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(timeout=10)

    def fault(self, name: str, pid: int, peers: Mapping[str, int] | None = None) -> ActiveFault:
        """Slow the links of node ``name`` (process ``pid``) until ``clear``: every
        one, or with ``peers`` (``{name: pid}`` of other nodes) only those
        between it and them, whichever side dialed."""
        active = ActiveFault.draw(self.settings, self._rng)

        def ports_of(pids: list[int]) -> Callable[[], set[int]]:
            return lambda: set().union(*(socket_ports(p) for p in pids if p))

        own = ports_of([pid])
        theirs = ports_of(list(peers.values())) if peers is not None else None
        # the dialers' ports now, read here in the chaos thread (not in the relays' loop)
        own_now, theirs_now = own(), theirs() if theirs is not None else set()

        def apply() -> None:
            for r in self.relays.values():
                if r.name == name:
                    if theirs is None:
                        r.fault = active  # every connection through it
                        continue
                    r.dialer_of_fault = theirs
                elif peers is not None and r.name not in peers:
                    continue  # not a link of this fault
                else:
                    r.dialer_of_fault = own
                r.dialer_fault = active
                ports = theirs_now if r.name == name else own_now
                for c in r.conns:
                    if c.peer_port in ports:
                        c.fault = active

        trio.from_thread.run_sync(apply, trio_token=self._token)
        return active

    def clear(self, name: str) -> None:
        """End the fault on node ``name``: chunks already held keep their release."""

        def apply() -> None:
            for r in self.relays.values():
                r.fault = r.dialer_fault = None
                r.dialer_of_fault = None
                for c in r.conns:
                    c.fault = None

        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(apply, trio_token=self._token)

    def to_json(self) -> dict[str, Any]:
        per_node = {name: r.stats.to_json() for name, r in self.relays.items()}
        keys = ("connections", "chunks", "bytes", "delayed", "lost", "cuts")
        total = {k: sum(s[k] for s in per_node.values()) for k in keys}
        total["max_hold_ms"] = max((s["max_hold_ms"] for s in per_node.values()), default=0.0)
        return {**total, "nodes": per_node}


def parse_delay_ms(text: str) -> tuple[float, float]:
    """``"50-300"`` (or ``"120"``) milliseconds -> the one-way delay range in seconds."""
    lo, _, hi = text.partition("-")
    try:
        a, b = float(lo), float(hi or lo)
    except ValueError:
        raise ValueError(f"{text!r}: expected LO-HI milliseconds, e.g. 50-300") from None
    if not 0 <= a <= b <= MAX_DELAY_MS:
        raise ValueError(f"{text!r}: need 0 <= LO <= HI <= {MAX_DELAY_MS:g} milliseconds")
    return a / 1000, b / 1000


def start_for_cluster(
    state: ClusterState, seed: int, delay: tuple[float, float] | None = None
) -> Relays:
    """A relay per node of ``state`` (its ``relay_port`` to its p2p ``port``):
    the nodes registered the relays' addresses when the cluster was created.
    ``delay``: the faults' one-way delay range (seconds; LinkFault's default)."""
    ports = {n.name: (n.relay_port, n.port) for n in state.nodes if n.relay_port}
    settings = LinkFault(delay=delay) if delay is not None else None
    return Relays.start(ports, seed, settings=settings)
