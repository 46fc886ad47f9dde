"""A holder in another process is SIGKILLed mid-transfer: the fetch moves on."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest
import trio

from flocknode.identity.keys import PeerKey
from flocknode.p2p.content import DirectoryBlobSource
from flocknode.p2p.fetch import fetch
from flocknode.p2p.framing import PROTOCOL_BLOB
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.messages import UpdateAnnounce
from flocknode.p2p.serve import ContentServer
from tests.integration.p2p.p2p_helpers import (
    RecordingSink,
    drain,
    running_nodes,
    spawn_node_process,
    wait_connected,
    wait_mesh,
    wait_until,
    write_blob,
)

pytestmark = pytest.mark.integration


async def test_holder_killed_mid_transfer_fetch_moves_on(tmp_path: Path) -> None:
    size = 48 << 20
    cid = write_blob(tmp_path / "blobs", size, seed=7)
    membership = StaticMembership(round_number=1)
    async with running_nodes(2, membership) as (good, voter):
        membership.set_voters(1, [voter.peer_id])
        source = DirectoryBlobSource(tmp_path / "blobs")
        ContentServer(good.p2p, source, source).install()
        victim_key = PeerKey.generate()
        members = {n.peer_id: membership.addrs(n.peer_id) for n in (good, voter)}
        members[victim_key.peer_id] = []
        proc, addrs = await trio.to_thread.run_sync(
            spawn_node_process, victim_key.seed(), members, [voter.peer_id], tmp_path / "blobs"
        )
        try:
            membership.add(victim_key.peer_id, addrs)
            killed = trio.Event()

            def kill_after_first_megabytes(written: int) -> None:
                if written >= (4 << 20) and not killed.is_set():
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.set()

            sink = RecordingSink(on_write=kill_after_first_megabytes)
            with trio.fail_after(60):
                result = await fetch(
                    voter.p2p,
                    PROTOCOL_BLOB,
                    cid,
                    [victim_key.peer_id, good.peer_id],
                    sink,
                    max_size=size,
                    expected_size=size,
                    round_number=1,
                )
            assert killed.is_set()
            assert await trio.to_thread.run_sync(proc.wait) == -signal.SIGKILL
            assert result.holder == good.peer_id
            assert [a.holder for a in result.failed_attempts] == [victim_key.peer_id]
            # SIGKILL looks like a clean close (truncated) or a reset connection
            assert result.failed_attempts[0].reason in {"truncated", "reset"}
            assert sink.data is not None and hashlib.sha256(sink.data).digest() == cid

            # the dead peer is redialed with growing delays; the survivors keep gossiping
            await wait_until(lambda: voter.p2p.dialer.failures(victim_key.peer_id) >= 2, 15)
            await wait_connected([good, voter])
            await wait_mesh([good, voter])
            await good.gossip.publish(UpdateAnnounce(1, cid, size))
            await wait_until(lambda: any(r.origin == good.peer_id for r in drain(voter)), 10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
