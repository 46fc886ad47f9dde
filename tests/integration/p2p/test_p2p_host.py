"""Host service lifecycle, discovery and the membership gate, on loopback."""

from __future__ import annotations

import errno
import itertools
import socket
from dataclasses import replace

import pytest
import trio
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from flocknode.identity.keys import PeerKey
from flocknode.p2p.host import ListenError, P2PHost
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.metrics import CONN_REFUSED, DIAL
from tests.integration.p2p.p2p_helpers import (
    LOOPBACK,
    running_nodes,
    strip_p2p,
    wait_connected,
    wait_until,
)

pytestmark = pytest.mark.integration


def _port(addr: Multiaddr) -> int:
    return int(addr.value_for_protocol("tcp"))


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) in (errno.ECONNREFUSED,)


async def test_run_reports_bound_addrs_and_stop_closes_the_listener() -> None:
    membership = StaticMembership()
    p2p = P2PHost(PeerKey.generate(), membership, LOOPBACK)
    async with trio.open_nursery() as nursery:
        addrs = await nursery.start(p2p.run)
        assert p2p.started.is_set()
        assert len(addrs) == 1 and str(addrs[0]).endswith(f"/p2p/{p2p.peer_id}")
        port = _port(addrs[0])
        assert port != 0 and not _refused(port)
        assert p2p.announce_addrs() == [strip_p2p(addrs[0])]
        p2p.stop()
    assert p2p.stopped.is_set()
    assert _refused(port)


async def test_cancelling_the_runner_also_closes_cleanly() -> None:
    membership = StaticMembership()
    async with running_nodes(2, membership) as (a, b):
        await wait_connected([a, b])
    # running_nodes stopped them via stop(); now cancel one from outside instead
    p2p = P2PHost(PeerKey.generate(), membership, LOOPBACK)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            addrs = await nursery.start(p2p.run)
            scope.cancel()
    assert p2p.stopped.is_set() and _refused(_port(addrs[0]))


async def test_announce_addrs_come_from_the_config() -> None:
    cfg = replace(LOOPBACK, announce_addrs=("/ip4/192.0.2.7/tcp/4040",))
    p2p = P2PHost(PeerKey.generate(), StaticMembership(), cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(p2p.run)
        assert p2p.announce_addrs() == [Multiaddr("/ip4/192.0.2.7/tcp/4040")]
        p2p.stop()


async def test_non_member_connection_is_closed_and_redials_back_off() -> None:
    membership = StaticMembership()
    async with running_nodes(1, membership) as (a,):
        # the outsider believes a is a member and dials it; a closes every connection
        outsider_view = StaticMembership()
        outsider_view.add(a.peer_id, membership.addrs(a.peer_id))
        outsider = P2PHost(PeerKey.generate(), outsider_view, LOOPBACK)
        # (when, failures so far) of every dial the outsider's dialer starts
        dials: list[tuple[float, int]] = []
        connect = outsider.host.connect

        async def recording_connect(info: PeerInfo) -> None:
            dials.append((trio.current_time(), outsider.dialer.failures(a.peer_id)))
            await connect(info)

        outsider.host.connect = recording_connect  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            await nursery.start(outsider.run)
            await wait_until(lambda: a.p2p.metrics.get(CONN_REFUSED, "not_member") >= 1, 10)
            await wait_until(lambda: outsider.peer_id not in a.p2p.connected_peers(), 10)
            # connections that end at once count as failures: the outsider backs off,
            # and from 5 failures on its delay is at the 2 s cap (>= 1.6 s with jitter)
            await wait_until(lambda: sum(f >= 5 for _, f in dials) >= 2, 30)
            gaps = [t1 - t0 for (t0, _), (t1, f1) in itertools.pairwise(dials) if f1 >= 5]
            assert len(gaps) >= 2 and min(gaps) >= 1.6  # without backoff: 0.2 s apart
            outsider.stop()


async def test_ended_membership_is_swept_and_the_peer_dropped() -> None:
    membership = StaticMembership()
    async with running_nodes(2, membership) as (a, b):
        await wait_connected([a, b])
        addrs_b = membership.addrs(b.peer_id)
        membership.remove(b.peer_id)  # b leaves the task: a drops it at the next sweep
        await wait_until(lambda: b.peer_id not in a.p2p.connected_peers(), 10)
        assert a.p2p.metrics.get(CONN_REFUSED, "membership_ended") >= 1
        membership.add(b.peer_id, addrs_b)  # and takes it back when it returns
        await wait_connected([a, b])


async def test_dropped_member_is_redialed_with_backoff_and_found_again() -> None:
    membership = StaticMembership()
    cfg = replace(LOOPBACK, redial_base=0.2, redial_cap=0.8)
    async with trio.open_nursery() as nursery:
        a = P2PHost(PeerKey.generate(), membership, cfg)
        b_key = PeerKey.generate()
        b = P2PHost(b_key, membership, cfg)
        a_addrs = await nursery.start(a.run)
        membership.add(a.peer_id, [strip_p2p(x) for x in a_addrs])
        b_addrs = await nursery.start(b.run)
        membership.add(b.peer_id, [strip_p2p(x) for x in b_addrs])
        await wait_until(lambda: b.peer_id in a.connected_peers(), 10)
        # what a voter's reach counts (docs/protocol.md, "Unservable models")
        await wait_until(lambda: b.peer_id in a.peers_connected_for(0.5), 10)
        b.stop()
        await b.stopped.wait()
        await wait_until(lambda: b.peer_id not in a.peers_connected_for(0), 10)
        await wait_until(lambda: a.dialer.failures(b.peer_id) >= 3, 15)
        assert a.metrics.get(DIAL, "failed") >= 2  # + the connection that ended early
        # same key, same port: a finds it again by itself
        same_port = replace(cfg, listen_addrs=(str(strip_p2p(b_addrs[0])),))
        b2 = P2PHost(b_key, membership, same_port)
        await nursery.start(b2.run)
        await wait_until(lambda: b2.peer_id in a.connected_peers(), 15)
        # a new connection: counted from when it began, not from the first one
        await wait_until(lambda: b2.peer_id in a.peers_connected_for(0), 10)
        assert b2.peer_id not in a.peers_connected_for(600)
        a.stop()
        b2.stop()


async def test_a_listen_address_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = replace(LOOPBACK, listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",))
        p2p = P2PHost(PeerKey.generate(), StaticMembership(), cfg)
        with pytest.raises(ListenError, match=r"p2p\.listen"):
            await p2p.run()
        assert p2p.stopped.is_set() and not p2p.started.is_set()


def test_bootstrap_entries_must_name_a_peer() -> None:
    with pytest.raises(ValueError, match="bootstrap entry"):
        P2PHost(
            PeerKey.generate(),
            StaticMembership(),
            replace(LOOPBACK, bootstrap=("/ip4/127.0.0.1/tcp/1",)),
        )
