"""A peer the network cuts off (a blackhole route in its network namespace, as
``cluster up --chaos partition`` does): the host's ``tcp_user_timeout`` has the
kernel close the connection, and the peer is redialed once the route is gone
(docs/protocol.md, "Faults and the promises kept under them", partition)."""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from flocknode.cluster import netns
from flocknode.identity.keys import PeerKey
from flocknode.p2p.framing import PROTOCOL_BLOB
from flocknode.p2p.membership import StaticMembership
from tests.integration.p2p.p2p_helpers import (
    LOOPBACK,
    running_nodes,
    spawn_node_process,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="network namespaces need root and iproute2",
    ),
]


async def test_a_cut_off_peer_is_dropped_within_the_user_timeout_and_redialed(
    tmp_path: Path,
) -> None:
    plan = netns.draw_plan(1, netns.machine_addresses(), random.Random())
    netns.set_up(plan)
    blackhole = ["-n", plan.namespace(0), "route", "add", "blackhole", f"{plan.gateway}/32"]
    try:
        membership = StaticMembership(round_number=1)
        config = replace(
            LOOPBACK, listen_addrs=(f"/ip4/{plan.gateway}/tcp/0",), tcp_user_timeout=2.0
        )
        async with running_nodes(1, membership, config) as (here,):
            far_key = PeerKey.generate()
            members = {here.peer_id: membership.addrs(here.peer_id), far_key.peer_id: []}
            (tmp_path / "blobs").mkdir()
            proc, addrs = await trio.to_thread.run_sync(
                lambda: spawn_node_process(
                    far_key.seed(),
                    members,
                    [],
                    tmp_path / "blobs",
                    listen=f"/ip4/{plan.address(0)}/tcp/0",
                    prefix=netns.exec_prefix(plan.namespace(0)),
                )
            )
            try:
                membership.add(far_key.peer_id, addrs)
                far = far_key.peer_id
                await wait_until(lambda: far in here.p2p.connected_peers(), 20)
                netns.run_commands([blackhole])  # the far side's packets to us are dropped
                t0 = time.monotonic()
                with trio.move_on_after(0.5):  # sends on the connection: unacknowledged
                    await here.p2p.open_stream(far, [PROTOCOL_BLOB])
                await wait_until(lambda: far not in here.p2p.connected_peers(), 10)
                dropped = time.monotonic() - t0
                assert dropped < 2.0 + 5.0, dropped  # the user timeout, and some slack
                netns.run_commands([["-n", *blackhole[1:3], "delete", *blackhole[4:]]])
                await wait_until(lambda: far in here.p2p.connected_peers(), 20)
            finally:
                proc.kill()
                await trio.to_thread.run_sync(proc.wait)
    finally:
        netns.tear_down(plan)
