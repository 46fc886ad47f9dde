"""Every p2p connection's TCP socket carries the host's ``tcp_user_timeout``, so
a peer the network cut off is dropped by the kernel within it instead of after
many minutes of retransmissions (docs/protocol.md, "Faults and the promises
kept under them", partition)."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from flocknode.p2p import compat
from flocknode.p2p.membership import StaticMembership
from tests.integration.p2p.p2p_helpers import LOOPBACK, running_nodes, wait_connected, wait_until

pytestmark = pytest.mark.integration


async def test_both_ends_of_a_connection_get_the_user_timeout() -> None:
    config = replace(LOOPBACK, tcp_user_timeout=7.5)
    async with running_nodes(2, StaticMembership(), config) as nodes:
        await wait_connected(nodes)

        def timeouts() -> list[int]:
            out = []
            for node in nodes:
                for conn in node.p2p.host.get_network().get_connections():
                    sock = compat.tcp_socket(conn)
                    assert sock is not None, "no TCP socket found under the connection"
                    out.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
            return out

        # set when the connection is announced (the notifee runs just after)
        await wait_until(lambda: len(timeouts()) >= 2 and set(timeouts()) == {7500})
