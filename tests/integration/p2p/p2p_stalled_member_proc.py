"""A member in its own process that requests a blob and reads it until the test stops it.

For the stalled-reader test: the test sends SIGSTOP while this process is still
reading, so nothing drains its end of the TCP connection any more (a hung process,
not a slow reader: its muxer stops reading too, so the server's socket fills).

argv[1]: JSON {"seed", "members": {peer id: [addrs]}, "voters": [peer ids],
"server": peer id, "content_id": hex, "streams": n, "report_after": bytes}.
Requests the blob on ``streams`` streams at once. Prints {"addrs": [...]} once
listening, then {"read": [bytes per stream]} once every stream has received
``report_after`` bytes, and keeps reading.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import MAX_WINDOW_SIZE, YamuxStream

from flocknode.identity.keys import PeerKey
from flocknode.p2p.framing import PROTOCOL_BLOB, Request, encode_request
from flocknode.p2p.host import HostConfig, P2PHost
from flocknode.p2p.membership import StaticMembership


async def main(args: dict[str, Any]) -> None:
    membership = StaticMembership(round_number=1)
    for pid, addrs in args["members"].items():
        membership.add(ID.from_base58(pid), addrs)
    membership.set_voters(1, [ID.from_base58(v) for v in args["voters"]])
    config = HostConfig(listen_addrs=("/ip4/127.0.0.1/tcp/0",), discovery_interval=60.0)
    p2p = P2PHost(PeerKey.from_seed(bytes.fromhex(args["seed"])), membership, config)
    server = ID.from_base58(args["server"])
    request = encode_request(Request(bytes.fromhex(args["content_id"]), 1))
    report_after = int(args["report_after"])
    received = [0] * int(args["streams"])

    async def read_one(i: int) -> None:
        stream = await p2p.open_stream(server, [PROTOCOL_BLOB])
        assert isinstance(stream, NetStream) and isinstance(stream.muxed_stream, YamuxStream)
        # the receive window a member on a long link grows to (py-libp2p grows it with
        # the round-trip time; on loopback it stays near 1 MiB): the server can then
        # send more than the socket buffers hold. Granted on the next read.
        stream.muxed_stream.target_recv_window = MAX_WINDOW_SIZE
        await stream.write(request)
        while chunk := await stream.read(1 << 20):
            first = min(received) < report_after
            received[i] += len(chunk)
            if first and min(received) >= report_after:
                print(json.dumps({"read": received}), flush=True)

    async with trio.open_nursery() as nursery:
        addrs = await nursery.start(p2p.run)
        print(json.dumps({"addrs": [str(a).split("/p2p/")[0] for a in addrs]}), flush=True)
        for i in range(len(received)):
            nursery.start_soon(read_one, i)


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
