"""Members that stop reading mid-transfer cannot hold content-server handlers forever.

Each stalled member runs in its own process and requests a large blob on several
streams; the test sends it SIGSTOP while it reads, so nothing drains its end of the
TCP connection any more (a hung process). The server's writes then wait on the full
socket until ``write_timeout``, and each handler resets its stream: one small yamux
frame, whose send waits on the same socket (behind the connection's write lock),
which is why the reset is bounded by ``RESET_TIMEOUT``. Every handler must end and
give its slot back, and the server must go on serving other members.

Why several streams, and two such members: trio sets TCP_NOTSENT_LOWAT (16 KiB), so
a send waits as soon as that much is queued unsent, but Linux still appends a small
frame to a last queued segment that has room, and the stopped peer's kernel soon
takes a little more data, leaving such room. A reset then waits for good only once
a writer still queued on the lock has filled that segment again, which fails to
happen when the writer holding the lock is the last to time out: about one run in
ten with eight streams (with one stream the code before fe22760 always passed). Two
stalled members are two chances; the old code failed every run measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from multiaddr import Multiaddr

from flocknode.identity.keys import PeerKey
from flocknode.p2p.content import DirectoryBlobSource, MemorySink
from flocknode.p2p.fetch import fetch
from flocknode.p2p.framing import PROTOCOL_BLOB
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.metrics import STREAM_SERVED
from flocknode.p2p.serve import ContentServer
from flocknode.p2p.stream_io import RESET_TIMEOUT, StreamLimits
from tests.integration.p2p.p2p_helpers import running_nodes, wait_until, write_blob

pytestmark = pytest.mark.integration

STALLED_PROC = Path(__file__).with_name("p2p_stalled_member_proc.py")
SIZE = 64 << 20  # far more than a stream carries before the stop
STALLED = 2  # members that stop reading
STREAMS = 8  # streams each of them has served at once
LIMITS = StreamLimits(write_timeout=1.5, max_streams_per_peer=STREAMS, max_pending_per_peer=STREAMS)
SLACK = 5.0  # scheduling on a loaded 2-core machine; the bug is a handler held forever


def _spawn_stalled_member(args: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    return subprocess.Popen(
        [sys.executable, str(STALLED_PROC), json.dumps(args)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _next_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"stalled member process exited with {proc.wait()}")
    out: dict[str, Any] = json.loads(line)
    return out


async def test_members_that_stop_reading_release_their_slots_and_others_are_served(
    tmp_path: Path,
) -> None:
    cid = write_blob(tmp_path / "blobs", SIZE, seed=11)
    membership = StaticMembership(round_number=1)
    keys = [PeerKey.generate() for _ in range(STALLED)]
    for key in keys:
        membership.add(key.peer_id, [])
    async with running_nodes(2, membership) as (server, other):
        membership.set_voters(1, [other.peer_id, *(k.peer_id for k in keys)])
        source = DirectoryBlobSource(tmp_path / "blobs")
        content = ContentServer(server.p2p, source, source, LIMITS)
        content.install()
        metrics = server.p2p.metrics
        procs: list[subprocess.Popen[str]] = []
        stopped: list[subprocess.Popen[str]] = []
        members = {
            str(n.peer_id): [str(a) for a in membership.addrs(n.peer_id)] for n in (server, other)
        }
        try:
            for key in keys:
                procs.append(
                    _spawn_stalled_member(
                        {
                            "seed": key.seed().hex(),
                            "members": members,
                            "voters": [str(key.peer_id)],
                            "server": str(server.peer_id),
                            "content_id": cid.hex(),
                            "streams": STREAMS,
                            "report_after": 1 << 19,  # on every stream
                        }
                    )
                )
            with trio.fail_after(60):  # importing libp2p in a fresh process is slow
                for key, proc in zip(keys, procs, strict=True):
                    hello = await trio.to_thread.run_sync(_next_line, proc)
                    membership.add(key.peer_id, [Multiaddr(a) for a in hello["addrs"]])

                async def stop_when_flowing(proc: subprocess.Popen[str]) -> None:
                    await trio.to_thread.run_sync(_next_line, proc)  # every stream flows
                    os.kill(proc.pid, signal.SIGSTOP)  # mid-transfer: it reads no more
                    stopped.append(proc)

                async with trio.open_nursery() as nursery:
                    for proc in procs:
                        nursery.start_soon(stop_when_flowing, proc)
            for key in keys:
                assert content._slots._open[key.peer_id] == STREAMS  # all still served
            assert metrics.get(STREAM_SERVED, "ok") == 0

            # each stalled block times out after write_timeout and its reset is given
            # up after RESET_TIMEOUT: every handler ends and its slot is free again
            limit = LIMITS.write_timeout + RESET_TIMEOUT + SLACK
            try:
                await wait_until(lambda: not content._slots._open, timeout=limit)
            except trio.TooSlowError:
                pytest.fail(f"handlers still hold slots {limit} s after their peers stalled")
            assert metrics.reasons(STREAM_SERVED) == {"aborted": STALLED * STREAMS}

            # another member is still served the whole blob. Both ends of that transfer
            # share this process, so a loaded machine that stalls it for longer than
            # the short write timeout above (which kept the stalled handlers quick to
            # test) would make the server's own write time out and reset the stream
            content.limits = dataclasses.replace(LIMITS, write_timeout=30.0)
            sink = MemorySink()
            result = await fetch(
                other.p2p,
                PROTOCOL_BLOB,
                cid,
                [server.peer_id],
                sink,
                max_size=SIZE,
                expected_size=SIZE,
                round_number=1,
            )
            assert result.holder == server.peer_id and result.failed_attempts == ()
            assert sink.data is not None and hashlib.sha256(sink.data).digest() == cid
            assert metrics.reasons(STREAM_SERVED) == {"aborted": STALLED * STREAMS, "ok": 1}
        finally:
            for proc in stopped:
                os.kill(proc.pid, signal.SIGCONT)
            for proc in procs:
                proc.kill()
                await trio.to_thread.run_sync(proc.wait)
                assert proc.stdout is not None
                proc.stdout.close()
