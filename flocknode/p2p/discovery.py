"""Keep connections to the task's members: dial from the registry, redial with backoff.

Addresses come from ``Membership.addrs`` (the multiaddrs each participant
registered on chain) plus the optional bootstrap list from the config (full
multiaddrs with ``/p2p/<id>``), which adds addresses for members whose
registered ones are unreachable from here. Only members are dialed: a bootstrap
entry for a peer that is not a member is ignored until it becomes one (the host
would close the connection anyway).

A peer that is not connected is dialed when due; each failed dial doubles its
delay (``Backoff``). A connection that ends within ``stable_after`` seconds
(refused by the other side, flapping) counts as a failure too; one that lasted
resets the count. A disconnect wakes the loop, so a dropped member is redialed
after ``Backoff.base`` the first time and later ever more slowly.

py-libp2p also dials on its own (pubsub re-opens its stream to a peer whose
connection ended, identify does the same), which would bypass the backoff. The
host refuses those dials (its dial gate) unless the dial runs inside
``explicit_dial(peer)``: the dialer's own dials and ``P2PHost.open_stream`` do.

The dialer keeps state for members only, and forgets a peer once its membership
ends (the table is as large as the member list, however long the node runs).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from multiaddr import Multiaddr

from flocknode.p2p import compat
from flocknode.p2p.membership import Membership
from flocknode.p2p.metrics import DIAL, P2PMetrics

log = logging.getLogger(__name__)

ADDR_TTL = 3600.0  # seconds the peerstore keeps registry addresses


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: base, 2*base, 4*base, ... capped at ``cap``."""

    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2  # +-20 %

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        if failures <= 0:
            return 0.0
        raw = min(self.cap, self.base * (2 ** min(failures - 1, 32)))
        return raw * (1.0 + self.jitter * (2.0 * rand() - 1.0))


@dataclass
class _PeerState:
    failures: int = 0
    next_at: float = 0.0
    in_flight: bool = False
    connected_at: float | None = None
    ended: int = 0  # connections that ``disconnected`` judged (stable or not)
    last_error: str = field(default="", repr=False)


@dataclass
class _Permit:
    peer: ID
    active: bool = True


# Set by ``explicit_dial`` in the task that dials. trio gives every task a copy of
# its parent's context, so a task the swarm spawns during our dial inherits the
# permit: ``active`` turns False when the ``with`` block ends, so such copies are
# worth nothing afterwards.
_explicit_dial: ContextVar[_Permit | None] = ContextVar("flocknode_explicit_dial", default=None)


@contextlib.contextmanager
def explicit_dial(peer: ID) -> Iterator[None]:
    """Dials to ``peer`` made by this task inside the block are ours: the gate lets them through."""
    permit = _Permit(peer)
    token = _explicit_dial.set(permit)
    try:
        yield
    finally:
        permit.active = False
        _explicit_dial.reset(token)


def dial_is_explicit(peer: ID) -> bool:
    """True inside ``explicit_dial(peer)`` (in the same task)."""
    permit = _explicit_dial.get()
    return permit is not None and permit.active and permit.peer == peer


def parse_bootstrap(entries: Iterable[str]) -> dict[ID, list[Multiaddr]]:
    """Bootstrap multiaddrs grouped by peer id. Raises ValueError naming a bad entry."""
    out: dict[ID, list[Multiaddr]] = {}
    for entry in entries:
        try:
            info = info_from_p2p_addr(Multiaddr(entry))
        except Exception as e:
            raise ValueError(
                f"bootstrap entry {entry!r} is not a multiaddr with /p2p/<id>: {e}"
            ) from None
        out.setdefault(info.peer_id, []).extend(info.addrs)
    return out


class PeerDialer:
    """The discovery loop of one host (run inside the host service's nursery)."""

    def __init__(
        self,
        host: IHost,
        membership: Membership,
        metrics: P2PMetrics,
        bootstrap: dict[ID, list[Multiaddr]] | None = None,
        backoff: Backoff | None = None,
        interval: float = 5.0,
        dial_timeout: float = 10.0,
        max_parallel: int = 8,
        stable_after: float = 10.0,
    ) -> None:
        self._host = host
        self._membership = membership
        self._metrics = metrics
        self._bootstrap = bootstrap or {}
        self._backoff = backoff or Backoff()
        self._interval = interval
        self._dial_timeout = dial_timeout
        self._limiter = trio.CapacityLimiter(max_parallel)
        self._stable_after = stable_after
        self._state: dict[ID, _PeerState] = {}
        self._wake = trio.Event()

    def wake(self) -> None:
        """Re-check now (a peer disconnected, or membership changed)."""
        self._wake.set()

    def connected(self, peer_id: ID) -> None:
        """A connection to a member exists (dialed by either side).

        The swarm runs its connect and disconnect notifications in tasks of
        their own, so a connection the other side closed at once may be reported
        after its end: a peer that is no longer connected is ignored here, and
        ``_dial`` counts that connection as a failure.
        """
        if peer_id not in self._host.get_connected_peers():
            return
        self._state.setdefault(peer_id, _PeerState()).connected_at = trio.current_time()

    def disconnected(self, peer_id: ID) -> None:
        """A member's connection ended: short-lived ones count as failures."""
        st = self._state.get(peer_id)
        if st is None or st.connected_at is None:
            return
        now = trio.current_time()
        lived, st.connected_at = now - st.connected_at, None
        st.ended += 1
        if lived >= self._stable_after:
            st.failures = 0
            st.next_at = now + self._backoff.base
        else:
            st.failures += 1
            st.next_at = now + self._backoff.delay(st.failures)
        self.wake()

    def connected_for(self, seconds: float) -> set[ID]:
        """The members connected now whose connection has lasted ``seconds`` or more."""
        now = trio.current_time()
        live = set(self._host.get_connected_peers())
        return {
            peer
            for peer, st in self._state.items()
            if peer in live and st.connected_at is not None and now - st.connected_at >= seconds
        }

    def tracked_peers(self) -> set[ID]:
        """The peers the dialer keeps state for (current members, and dials in flight)."""
        return set(self._state)

    def failures(self, peer_id: ID) -> int:
        st = self._state.get(peer_id)
        return st.failures if st else 0

    def backing_off(self, peer_id: ID) -> bool:
        """The last dials or connections to ``peer_id`` failed and its next dial is not due."""
        st = self._state.get(peer_id)
        return st is not None and st.failures > 0 and trio.current_time() < st.next_at

    def addrs_for(self, peer_id: ID) -> list[Multiaddr]:
        seen: dict[str, Multiaddr] = {}
        for a in [*self._membership.addrs(peer_id), *self._bootstrap.get(peer_id, ())]:
            seen.setdefault(str(a), a)
        return list(seen.values())

    def _due(self, now: float) -> list[ID]:
        me = self._host.get_id()
        connected = set(self._host.get_connected_peers())
        members = self._membership.members()
        self._forget_former_members(set(members))
        due = []
        for peer in members:
            if peer == me or peer in connected:
                continue
            st = self._state.setdefault(peer, _PeerState())
            if st.connected_at is not None:
                # gone without a disconnect notice (the swarm does not always send
                # one for a connection closed while it was set up): judge it now
                self.disconnected(peer)
            if not st.in_flight and now >= st.next_at:
                due.append(peer)
        return due

    def _forget_former_members(self, members: set[ID]) -> None:
        """Drop the state of peers that are no longer members (a dial in flight
        keeps its entry until it ends; the next pass drops it)."""
        gone = [p for p, st in self._state.items() if p not in members and not st.in_flight]
        for peer in gone:
            del self._state[peer]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                for peer in self._due(trio.current_time()):
                    self._state[peer].in_flight = True
                    nursery.start_soon(self._dial, peer)
                self._wake = trio.Event()
                with trio.move_on_after(self._interval):
                    await self._wake.wait()
                # let the disconnect settle before looking again
                await trio.sleep(min(self._backoff.base, self._interval) / 4)

    async def _dial(self, peer: ID) -> None:
        st = self._state[peer]
        ended_before = st.ended
        try:
            addrs = self.addrs_for(peer)
            if not addrs:
                ok, err = False, "no_addrs"
            else:
                async with self._limiter:
                    ok, err = await self._connect(peer, addrs)
        finally:
            st.in_flight = False
        now = trio.current_time()
        if ok and st.ended == ended_before and peer not in self._host.get_connected_peers():
            # gone already, and ``disconnected`` did not see it (it ran before
            # ``connected``): a connection that ended at once is a failure
            ok, err = False, "closed"
        if ok:  # the failure count is reset once the connection proved stable
            # the connection may already have ended (the peer closed it during the
            # handshake) and ``disconnected`` set a backoff: never shorten it
            st.next_at = max(st.next_at, now + self._backoff.base)
            self._metrics.inc(DIAL, "ok")
            log.debug("dialed peer=%s", peer)
        else:
            st.failures += 1
            st.next_at = now + self._backoff.delay(st.failures)
            st.last_error = err
            self._metrics.inc(DIAL, "failed")
            log.debug("dial failed peer=%s failures=%d error=%s", peer, st.failures, err)

    async def _connect(self, peer: ID, addrs: list[Multiaddr]) -> tuple[bool, str]:
        """Dial ``peer``; any failure (addresses come from the registry, untrusted)
        is a failed dial, never an exception out of the dialer."""
        try:
            self._host.get_peerstore().add_addrs(peer, addrs, int(ADDR_TTL))
            # our backoff governs retries, not the swarm's failed-dial cache
            compat.forget_failed_dial(self._host.get_network(), peer)
        except Exception as e:
            return False, type(e).__name__
        with trio.move_on_after(self._dial_timeout), explicit_dial(peer):
            try:
                await self._host.connect(PeerInfo(peer, addrs))
            except Exception as e:
                return False, type(e).__name__
            return True, ""
        return False, "timeout"
